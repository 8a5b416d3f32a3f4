"""What a call would have cost otherwise: the same tokens under another model, service tier, cache share or catalog
version, priced per call exactly as ``costplane price`` prices it.

Size tiers apply per call (pricing summed tokens is wrong for tiered models), and every counterfactual is rounded
once per call, half-even, to nano-USD like a real cost. The savings reports, the advisor and the scenario
calculator all price through :func:`reprice`; the reports compile the same rule to SQL
(``costplane.reports.repricing_sql``) so a month of calls is re-priced where it is stored, and a test holds the two
equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from costplane.pricing.catalog import PriceCatalog
from costplane.pricing.cost import Cost, round_half_even


@dataclass(frozen=True, slots=True)
class Buckets:
    """One call's disjoint token buckets (prompt = input + cached + write)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens


@dataclass(frozen=True, slots=True)
class Target:
    """What to price a call as; None keeps the call's own value.

    ``cached_share`` makes that share of the prompt (rounded half-even, at most input + cached) a cache read, the
    rest of input + cached uncached input; cache writes stay as they are. ``price_version`` names a catalog
    version; without it the version in force at the call's time prices it.
    """

    provider: str | None = None
    model: str | None = None
    service_tier: str | None = None
    cached_share: Fraction | None = None
    price_version: str | None = None


class UnknownVersion(ValueError):
    """A price version the catalog does not hold."""


def with_cached_share(buckets: Buckets, share: Fraction) -> Buckets:
    """The buckets with ``share`` of the prompt read from the cache instead of sent uncached."""
    if not 0 <= share <= 1:
        raise ValueError(f"a cached share is between 0 and 1, not {share}")
    movable = buckets.input_tokens + buckets.cached_input_tokens
    cached = min(round_half_even(share.numerator * buckets.prompt_tokens, share.denominator), movable)
    return replace(buckets, input_tokens=movable - cached, cached_input_tokens=cached)


def version_start(catalog: PriceCatalog, price_version: str) -> int:
    """The moment a named version takes effect (pricing "at" it selects it)."""
    for version in catalog.versions:
        if version.price_version == price_version:
            return version.effective_from_ms
    known = ", ".join(v.price_version for v in catalog.versions)
    raise UnknownVersion(f"no price version {price_version!r} in the catalog (it has: {known})")


def reprice(
    catalog: PriceCatalog,
    provider: str,
    model: str,
    buckets: Buckets,
    service_tier: str | None,
    occurred_at_ms: int,
    target: Target,
) -> Cost:
    """The call's cost under ``target``, per call, rounded once; an unknown target model is ``unpriced``."""
    if target.cached_share is not None:
        buckets = with_cached_share(buckets, target.cached_share)
    at = version_start(catalog, target.price_version) if target.price_version is not None else occurred_at_ms
    return catalog.price_tokens(
        target.provider if target.provider is not None else provider,
        target.model if target.model is not None else model,
        buckets.input_tokens,
        buckets.cached_input_tokens,
        buckets.cache_write_tokens,
        buckets.output_tokens,
        buckets.reasoning_tokens,
        service_tier=target.service_tier if target.service_tier is not None else service_tier,
        occurred_at_ms=at,
    )
