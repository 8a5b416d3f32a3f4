"""The versioned price catalog: which price applied to a call, at the moment it happened.

A catalog holds one or more *versions*, each with an ``effective_from`` instant and a ``price_version`` label
(provenance and date, e.g. ``litellm-1.80.0@2026-11-22``). An event is priced with the newest version effective at
its ``occurred_at``, so history can be re-rated and a price change never rewrites the past. Events older than every
version use the oldest one.

Model lookup, per version: the exact name when its provider matches (or none is given), then
``<provider>/<model>``, then the exact name from any provider, then the name without its provider prefix, then the
same in lower case. Results (including "unknown") are cached per catalog, bounded.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

from costplane.pricing import fields as f
from costplane.pricing.cost import BUCKETS, Cost, ModelRates, TokenUsage, unpriced_cost
from costplane.pricing.litellm_import import (
    CATALOG_FORMAT,
    build_version,
    is_litellm_map,
    load_json_exact,
    to_decimal,
)
from costplane.pricing.offpeak import OffPeakSchedule, off_peak_prices
from costplane.pricing.overrides import Overrides, apply_discount, load_overrides
from costplane.pricing.rates import FieldTable, Rate

__all__ = [
    "CatalogError",
    "CatalogVersion",
    "PriceCatalog",
    "UsageLike",
    "default_catalog",
    "load_catalog",
    "parse_catalog",
    "shipped_catalog_path",
]

MIN_SCALE: Final = 18  # atto-USD per token
META_KEYS: Final = frozenset({"provider", "mode", "threshold_inclusive", "off_peak_pricing"})

#: Provider names apps use → LiteLLM's provider names.
PROVIDER_ALIASES: Final[dict[str, str]] = {
    "google": "gemini",
    "google_ai": "gemini",
    "googleai": "gemini",
    "vertex": "vertex_ai",
    "vertexai": "vertex_ai",
    "aws": "bedrock",
    "amazon": "bedrock",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "mistralai": "mistral",
    "together": "together_ai",
    "fireworks": "fireworks_ai",
    "x-ai": "xai",
}

_MISSING: Final = object()


class UsageLike(Protocol):
    """The attributes :meth:`PriceCatalog.price_event` reads (``costplane.publisher.event.UsageEvent`` has them)."""

    provider: str
    model: str
    occurred_at: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    service_tier: str | None


class CatalogError(ValueError):
    """A catalog file that is neither a costplane catalog nor a LiteLLM map, or has invalid entries."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_instant(value: Any) -> int:
    """Epoch millis from an ISO-8601 string (``Z`` allowed; a bare date is midnight UTC) or a number of millis."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise CatalogError(f"effective_from: not an ISO-8601 instant: {value!r}") from None
    else:
        raise CatalogError(f"effective_from: expected an ISO-8601 string or epoch millis, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def normalize_provider(provider: str | None) -> str:
    p = (provider or "").strip().lower()
    return PROVIDER_ALIASES.get(p, p)


def provider_matches(entry_provider: str, provider: str) -> bool:
    """``vertex_ai`` matches LiteLLM's ``vertex_ai-language-models`` and the like."""
    return entry_provider == provider or entry_provider.startswith(provider + "-")


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    """One price list in force from ``effective_from_ms`` on. Model entries hold exact Decimal prices."""

    price_version: str
    effective_from_ms: int
    models: Mapping[str, Mapping[str, Any]]
    source: Mapping[str, Any] = field(default_factory=dict)

    def find(self, provider: str | None, model: str) -> tuple[str, Mapping[str, Any]] | None:
        """The catalog entry for a model as an app names it (see the module docstring for the order)."""
        models = self.models
        p = normalize_provider(provider)
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        if model != model.lower():
            candidates += [c.lower() for c in candidates]
        for name in candidates:
            entry = models.get(name)
            if entry is not None and (not p or provider_matches(str(entry.get("provider", "")), p)):
                return name, entry
            if p:
                prefixed = f"{p}/{name}"
                entry = models.get(prefixed)
                if entry is not None:
                    return prefixed, entry
            entry = models.get(name)
            if entry is not None:
                return name, entry
        return None


def _entry_prices(entry: Mapping[str, Any], where: str) -> dict[str, Decimal]:
    prices: dict[str, Decimal] = {}
    for key, value in entry.items():
        if key in META_KEYS or f.parse_price_key(key) is None:
            continue
        number = to_decimal(value)
        if number is None:
            raise CatalogError(f"{where}.{key}: expected a non-negative price, got {value!r}")
        prices[key] = number
    return prices


def _scale_for(prices: Iterable[Decimal]) -> int:
    """Smallest power of ten (≥ 18) at which every price, and half of it (batch), is an exact integer."""
    scale = MIN_SCALE
    for value in prices:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int):
            scale = max(scale, 1 - exponent)
    return scale


def _normalize_entry(name: str, entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected an object of prices")
    out: dict[str, Any] = {
        "provider": normalize_provider(str(entry.get("provider") or entry.get("litellm_provider") or "")),
        "mode": str(entry.get("mode") or "chat"),
    }
    if entry.get("threshold_inclusive") is True:
        out["threshold_inclusive"] = True
    block = entry.get("off_peak_pricing")
    if isinstance(block, Mapping):
        off_peak: dict[str, Any] = {k: v for k, v in block.items() if k in ("windows", "hours_utc", "weekday_timezone")}
        off_peak.update(_entry_prices(block, f"{where}.off_peak_pricing"))
        out["off_peak_pricing"] = off_peak
    out.update(_entry_prices(entry, where))
    return out


def parse_catalog(document: Any, overrides: Overrides | None = None) -> list[CatalogVersion]:
    """Validate a costplane catalog document into versions (oldest first), applying overrides."""
    if not isinstance(document, Mapping) or document.get("format") != CATALOG_FORMAT:
        raise CatalogError(f"not a costplane catalog (expected format {CATALOG_FORMAT!r})")
    raw_versions = document.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise CatalogError("catalog has no versions")
    parsed: list[tuple[int, dict[str, Any], bool]] = []
    for i, version in enumerate(raw_versions):
        if not isinstance(version, Mapping) or not isinstance(version.get("price_version"), str):
            raise CatalogError(f"versions[{i}]: needs a price_version string")
        if not isinstance(version.get("models") or {}, Mapping):
            raise CatalogError(f"versions[{i}].models: expected an object")
        parsed.append((parse_instant(version.get("effective_from", 0)), dict(version), bool(version.get("inherit"))))
    parsed.sort(key=lambda item: item[0])
    tag = f"+{overrides.tag}" if overrides is not None and overrides.tag else ""
    result: list[CatalogVersion] = []
    previous: dict[str, Mapping[str, Any]] = {}
    for effective, version, inherit in parsed:
        label = str(version["price_version"])
        models: dict[str, Mapping[str, Any]] = dict(previous) if inherit else {}
        for name, entry in (version.get("models") or {}).items():
            models[str(name)] = _normalize_entry(str(name), entry, f"{label}.{name}")
        previous = dict(models)
        if overrides is not None:
            for name, entry in list(models.items()):
                percent = overrides.discount_for(name, str(entry.get("provider", "")))
                if percent is not None:
                    models[name] = apply_discount(entry, percent)
            for name, entry in overrides.models.items():
                models[name] = _normalize_entry(name, entry, f"overrides.models.{name}")
        source = version.get("source") if isinstance(version.get("source"), Mapping) else {}
        result.append(CatalogVersion(label + tag, effective, models, source or {}))
    return result


class PriceCatalog:
    """Prices usage records exactly; thread-safe for reads (compiled rates are cached idempotently)."""

    def __init__(
        self,
        versions: Sequence[CatalogVersion],
        *,
        clock: Callable[[], int] = now_ms,
        max_cached_models: int = 100_000,
    ) -> None:
        if not versions:
            raise CatalogError("a catalog needs at least one version")
        self.versions: tuple[CatalogVersion, ...] = tuple(sorted(versions, key=lambda v: v.effective_from_ms))
        self._starts = [v.effective_from_ms for v in self.versions]
        self._single = len(self.versions) == 1
        self._clock = clock
        self._max_cached = max_cached_models
        self._compiled: dict[tuple[int, str | None, str], ModelRates | None] = {}
        self._unpriced = tuple(unpriced_cost(v.price_version) for v in self.versions)

    # -- versions -------------------------------------------------------------------------------------------
    def version_index(self, occurred_at_ms: int | None = None) -> int:
        """Index of the newest version effective at ``occurred_at_ms`` (now if None; oldest if before all)."""
        if self._single:
            return 0
        at = self._clock() if occurred_at_ms is None else occurred_at_ms
        return max(bisect.bisect_right(self._starts, at) - 1, 0)

    def version_at(self, occurred_at_ms: int | None = None) -> CatalogVersion:
        return self.versions[self.version_index(occurred_at_ms)]

    @property
    def price_version(self) -> str:
        """The version in force now."""
        return self.version_at().price_version

    # -- lookup ---------------------------------------------------------------------------------------------
    def _compile(self, index: int, provider: str | None, model: str) -> ModelRates | None:
        version = self.versions[index]
        found = version.find(provider, model)
        rates: ModelRates | None = None
        if found is not None:
            name, entry = found
            prices = {k: v for k, v in entry.items() if k not in META_KEYS}
            block = entry.get("off_peak_pricing")
            off_prices = off_peak_prices(prices, block) if isinstance(block, Mapping) else None
            rates = ModelRates(
                name=name,
                provider=str(entry.get("provider", "")),
                table=FieldTable(prices),
                price_version=version.price_version,
                scale=_scale_for([*prices.values(), *(off_prices or {}).values()]),
                inclusive=bool(entry.get("threshold_inclusive")),
                off_peak=OffPeakSchedule.from_block(block) if isinstance(block, Mapping) else None,
                off_peak_table=FieldTable(off_prices) if off_prices is not None else None,
            )
        if len(self._compiled) >= self._max_cached:
            self._compiled.clear()  # bounded: arbitrary model strings from events cannot grow memory forever
        self._compiled[(index, provider, model)] = rates
        return rates

    def lookup(self, provider: str | None, model: str, occurred_at_ms: int | None = None) -> ModelRates | None:
        """The compiled prices of a model in the version effective at ``occurred_at_ms``, or None if unknown."""
        index = self.version_index(occurred_at_ms)
        rates = self._compiled.get((index, provider, model), _MISSING)
        if rates is _MISSING:
            return self._compile(index, provider, model)
        return rates  # type: ignore[return-value]

    def is_priced(self, provider: str | None, model: str, occurred_at_ms: int | None = None) -> bool:
        return self.lookup(provider, model, occurred_at_ms) is not None

    # -- pricing --------------------------------------------------------------------------------------------
    def price(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        service_tier: str | None = None,
        occurred_at_ms: int | None = None,
    ) -> Cost:
        """Exact cost of one usage record; unknown model → ``cost_nanos=0, unpriced=True``."""
        u = usage
        buckets = (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens)
        return self.price_tokens(
            provider,
            model,
            *buckets,
            cache_write_1h_tokens=u.cache_write_1h_tokens,
            service_tier=service_tier,
            occurred_at_ms=occurred_at_ms,
        )

    def price_tokens(
        self,
        provider: str | None,
        model: str,
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
        *,
        cache_write_1h_tokens: int = 0,
        service_tier: str | None = None,
        occurred_at_ms: int | None = None,
    ) -> Cost:
        """:meth:`price` without building a TokenUsage: the worker's hot path (token counts already validated)."""
        index = 0 if self._single else self.version_index(occurred_at_ms)
        key = (index, provider, model)
        rates = self._compiled[key] if key in self._compiled else self._compile(index, provider, model)
        if rates is None:
            return self._unpriced[index]
        tier = _TIER_FAST.get(service_tier) or f.normalize_tier(service_tier)
        off_peak = False
        if rates.off_peak is not None:
            off_peak = rates.is_off_peak(self._clock() if occurred_at_ms is None else occurred_at_ms)
        return rates.price(
            tier,
            input_tokens,
            cached_input_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
            output_tokens,
            reasoning_tokens,
            off_peak,
        )

    def price_event(self, event: UsageLike) -> Cost:
        """:meth:`price_tokens` for anything shaped like a UsageEvent (provider, model, the five token buckets,
        ``service_tier``, ``occurred_at`` in epoch millis). A ``result_cache_hit`` is the caller's business."""
        return self.price_tokens(
            event.provider,
            event.model,
            event.input_tokens,
            event.cached_input_tokens,
            event.cache_write_tokens,
            event.output_tokens,
            event.reasoning_tokens,
            service_tier=event.service_tier,
            occurred_at_ms=event.occurred_at,
        )

    def worst_case_nanos(
        self,
        provider: str,
        model: str,
        prompt_tokens: int,
        max_tokens: int,
        service_tier: str | None = None,
    ) -> int:
        """Upper bound of a call before it is made, in nano-USD, at the prices in force now.

        The prompt is billed as uncached input (at its size tier) and ``max_tokens`` at the dearer of the output and
        reasoning prices; rounded *up*, since a guard must never understate. Unknown model → 0 (check
        :meth:`is_priced`).
        """
        rates = self.lookup(provider, model)
        if rates is None:
            return 0
        tier = _TIER_FAST.get(service_tier) or f.normalize_tier(service_tier)
        level = rates.level(prompt_tokens) if rates.thresholds else 0
        # Off-peak prices are never higher in practice, but a guard cannot know when the call will be billed.
        # (Written out rather than as max() over candidate lists: this runs on every guarded call.)
        c = rates.rates(tier, level)
        r_in, r_out = c[0], max(c[4], c[5])
        if rates.off_peak is not None:
            c = rates.rates(tier, level, True)
            r_in, r_out = max(r_in, c[0]), max(r_out, c[4], c[5])
        units: int = prompt_tokens * r_in + max_tokens * r_out
        divisor: int = 10 ** (rates.scale - 9)
        return -(-units // divisor)

    def explain(
        self,
        provider: str | None,
        model: str,
        prompt_tokens: int = 0,
        service_tier: str | None = None,
        occurred_at_ms: int | None = None,
    ) -> dict[str, Rate] | None:
        """Per-bucket unit price and the field it came from (for ``costplane price`` and docs), or None."""
        rates = self.lookup(provider, model, occurred_at_ms)
        if rates is None:
            return None
        off_peak = rates.is_off_peak(self._clock() if occurred_at_ms is None else occurred_at_ms)
        explained = rates.explain(f.normalize_tier(service_tier), prompt_tokens, off_peak)
        return dict(zip(BUCKETS, explained, strict=True))


_TIER_FAST: Final[dict[str | None, str]] = {None: "standard", **{t: t for t in f.SERVICE_TIERS}}


# -- loading --------------------------------------------------------------------------------------------------
def shipped_catalog_path() -> Path:
    """The catalog that ships with the package (converted from LiteLLM's public map)."""
    return Path(str(resources.files("costplane.pricing").joinpath("data", "catalog.json")))


def _document_from_file(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror or exc}") from exc
    try:
        document = load_json_exact(data)
    except (ValueError, RecursionError) as exc:
        raise CatalogError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(document, Mapping) and document.get("format") == CATALOG_FORMAT:
        return document
    if is_litellm_map(document):
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        version, _ = build_version(
            document,
            source=f"litellm-map.{digest[:8]}",
            effective_from=datetime(1970, 1, 1, tzinfo=UTC),
            source_sha256=digest,
        )
        return {"format": CATALOG_FORMAT, "format_version": 1, "versions": [version]}
    raise CatalogError(f"{path}: neither a costplane catalog nor a LiteLLM price map")


def load_catalog(
    path: Path | None = None,
    overrides: Path | None = None,
    *,
    clock: Callable[[], int] = now_ms,
) -> PriceCatalog:
    """Load a catalog file (costplane format or a raw LiteLLM map, detected) with optional overrides.

    ``path=None`` loads the shipped catalog.
    """
    document = _document_from_file(Path(path) if path is not None else shipped_catalog_path())
    parsed_overrides = load_overrides(Path(overrides)) if overrides is not None else None
    return PriceCatalog(parse_catalog(document, parsed_overrides), clock=clock)


@functools.lru_cache(maxsize=8)
def _cached_catalog(path: Path | None, overrides: Path | None, _stamp: tuple[int, int]) -> PriceCatalog:
    return load_catalog(path, overrides)


def _mtime(path: Path | None) -> int:
    try:
        return path.stat().st_mtime_ns if path is not None else 0
    except OSError:
        return -1


def default_catalog() -> PriceCatalog:
    """The catalog in force: ``COSTPLANE_PRICING_CATALOG`` / ``COSTPLANE_PRICING_OVERRIDES``, else the shipped one.

    Loaded once per process per (file, modification time), so every caller shares one compiled cache.
    """
    from costplane.config import PricingSettings, load_settings

    settings = load_settings(PricingSettings)
    path = settings.catalog
    overrides = getattr(settings, "overrides", None)
    return _cached_catalog(path, overrides, (_mtime(path), _mtime(overrides)))
