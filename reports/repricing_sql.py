"""The re-pricing rule of ``costplane.pricing.repricing`` compiled to SQL, so a month of calls is re-priced where it
is stored, per call, with the same integer rates, size tiers and half-even rounding.

:func:`compile_routes` turns "these (provider, model) pairs, priced as these targets, at this tier" into two SQL
expressions over a raw event row: the exact cost in catalog units and the divisor to nano-USD. A report computes
both in an inner query and rounds with :func:`half_even` outside. The target rates are those of the catalog version
in force at each row's ``occurred_at`` — the version that priced the call — so a saving never mixes two price
lists. A target with off-peak windows is not compiled (its price depends on the hour) and its calls come out NULL,
like calls with no route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from costplane.pricing import fields as f
from costplane.pricing.catalog import PriceCatalog
from costplane.pricing.repricing import version_start


def half_even(units: str, divisor: str) -> str:
    """SQL: the column ``units`` divided by the column ``divisor``, rounded half-even; NULL without a divisor."""
    return (
        f"if({divisor} IS NULL, NULL, intDiv({units}, {divisor}) + if(2 * ({units} % {divisor}) > {divisor} OR "
        f"(2 * ({units} % {divisor}) = {divisor} AND intDiv({units}, {divisor}) % 2 = 1), 1, 0))"
    )


_TIER = "ifNull(service_tier, 'standard')"
_PROMPT = "(input_tokens + cached_input_tokens + cache_write_tokens)"
#: The raw row's token bucket columns, in the catalog's rate order (less the 1-hour cache write).
BUCKET_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class Compiled:
    """``units`` and ``divisor`` SQL over a raw row, their bound parameters, and the targets left out."""

    units: str
    divisor: str
    params: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def compile_routes(
    catalog: PriceCatalog,
    routes: Mapping[tuple[str, str], tuple[str, str]],
    tier: str | None = None,
    param_prefix: str = "rp",
    buckets: Mapping[str, str] | None = None,
    price_version: str | None = None,
) -> Compiled:
    """SQL pricing each row whose (provider, model) is in ``routes`` as its target, at ``tier`` (None: the row's
    own service tier), with the catalog version in force at the row's ``occurred_at``; other rows get NULL.

    ``buckets`` replaces the SQL of some token buckets (``output_tokens`` → ``"_excess"``) to price part of a call;
    the size tier is still the call's own prompt size. ``price_version`` prices every row with that one catalog
    version instead (raises :class:`~costplane.pricing.repricing.UnknownVersion`)."""
    b = {name: name for name in BUCKET_COLUMNS}
    b.update(buckets or {})
    params: dict[str, Any] = {}
    units_cases: list[str] = []
    divisor_cases: list[str] = []
    skipped: list[str] = []
    tiers = [f.normalize_tier(tier)] if tier is not None else list(f.SERVICE_TIERS)
    starts = (
        [version_start(catalog, price_version)]
        if price_version is not None
        else [v.effective_from_ms for v in catalog.versions]
    )
    for n, ((provider, model), (to_provider, to_model)) in enumerate(sorted(routes.items())):
        params[f"{param_prefix}p{n}"], params[f"{param_prefix}m{n}"] = provider, model
        row = f"provider = {{{param_prefix}p{n}:String}} AND model = {{{param_prefix}m{n}:String}}"
        for v, start in enumerate(starts):
            rates = catalog.lookup(to_provider, to_model, start)
            if rates is None or rates.off_peak is not None:
                skipped.append(to_model)
                continue
            when = ""
            if len(starts) > 1:  # the first version also prices anything before it, as the catalog does
                low = f" AND toUnixTimestamp64Milli(occurred_at) >= {start}" if v else ""
                high = f" AND toUnixTimestamp64Milli(occurred_at) < {starts[v + 1]}" if v + 1 < len(starts) else ""
                when = low + high
            op = ">=" if rates.inclusive else ">"
            level = " + ".join(f"({_PROMPT} {op} {t})" for t in rates.thresholds) or "0"
            for t in tiers:
                tier_cond = "" if tier is not None else f" AND {_TIER} = '{t}'"
                for lvl in range(len(rates.thresholds) + 1):
                    r_in, r_cached, r_write, _r_write_1h, r_out, r_reason = rates.rates(t, lvl)
                    cond = f"{row}{when}{tier_cond} AND ({level}) = {lvl}"
                    units_cases.append(
                        f"{cond}, toInt128({b['input_tokens']}) * {r_in} + "
                        f"toInt128({b['cached_input_tokens']}) * {r_cached} + "
                        f"toInt128({b['cache_write_tokens']}) * {r_write} + toInt128({b['output_tokens']}) * {r_out} + "
                        f"toInt128({b['reasoning_tokens']}) * {r_reason}"
                    )
                    divisor_cases.append(f"{cond}, toInt128({10 ** (rates.scale - 9)})")
    if not units_cases:
        return Compiled("CAST(NULL AS Nullable(Int128))", "CAST(NULL AS Nullable(Int128))", params, skipped)
    return Compiled(
        f"multiIf({', '.join(units_cases)}, NULL)", f"multiIf({', '.join(divisor_cases)}, NULL)", params, skipped
    )
