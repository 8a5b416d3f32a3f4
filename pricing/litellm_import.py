"""Convert LiteLLM's public price map into a costplane catalog version.

LiteLLM's ``model_prices_and_context_window.json`` is the most complete public price list; it ships inside the
``litellm`` wheel as ``litellm/model_prices_and_context_window_backup.json``. We read it from that file (or from the
wheel itself, which also tells us its version for provenance) and keep only what token pricing needs: models whose
``mode`` is a text-token mode, and only their per-token price fields. Prices are kept as the exact decimal literals
of the JSON (parsed as Decimal, never as float).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from costplane.pricing import fields as f

#: LiteLLM modes we price by tokens. ``responses`` holds models served only by OpenAI's Responses API
#: (o3-pro, gpt-5-pro, codex models) — chat models in all but name.
TOKEN_MODES: frozenset[str] = frozenset({"chat", "completion", "embedding", "responses"})

#: Providers that bill the long-context tier once the prompt *reaches* the threshold (LiteLLM: xAI).
INCLUSIVE_THRESHOLD_PROVIDERS: frozenset[str] = frozenset({"xai"})

WHEEL_MEMBER = "litellm/model_prices_and_context_window_backup.json"

CATALOG_FORMAT = "costplane-price-catalog"
CATALOG_FORMAT_VERSION = 1


@dataclass(slots=True)
class ImportReport:
    """What a conversion kept and skipped, so the CLI can tell the user (the library never prints)."""

    kept: int = 0
    skipped_mode: int = 0
    skipped_unpriced: list[str] = field(default_factory=list)
    bad_values: list[str] = field(default_factory=list)


def load_json_exact(text: str | bytes) -> Any:
    """Parse JSON keeping every number as an exact Decimal (a float would already have lost the price)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def to_decimal(value: Any) -> Decimal | None:
    """A price as an exact Decimal; None for null, booleans, non-numbers, NaN/inf and negatives."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)  # the shortest literal that round-trips, i.e. what the file said
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number < 0:
        return None
    return number


def price_literal(value: Decimal) -> str:
    """A compact, exact, plain decimal literal for the catalog file (``0.0000025``, never ``2.5E-6``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def is_litellm_map(document: Any) -> bool:
    """True for a LiteLLM-format map: model name → object with ``litellm_provider``/``mode``/price keys."""
    if not isinstance(document, Mapping) or document.get("format") == CATALOG_FORMAT:
        return False
    for name, entry in document.items():
        if name == "sample_spec":
            continue
        if isinstance(entry, Mapping) and (
            "litellm_provider" in entry or "mode" in entry or f.INPUT in entry or f.OUTPUT in entry
        ):
            return True
    return False


def _threshold_label(tokens: int) -> str:
    return f"{tokens // 1000}k" if tokens % 1000 == 0 else str(tokens)


def _tiered_prices(entry: Mapping[str, Any], tiers: Any, report: ImportReport, name: str) -> dict[str, Decimal]:
    """LiteLLM's ``tiered_pricing`` (ranges of prompt tokens, all-or-nothing) as size-tier fields.

    A tier ``{"range": [start, end], ...}`` applies when ``start < prompt <= end`` and a prompt past the last range
    stays in the last tier: exactly a ``_above_<start>_tokens`` threshold. Rates a tier leaves out fall back to the
    tier's own input rate (cache read and write), its output rate (reasoning) or the model's output rate, as in
    LiteLLM, so they are written out per tier rather than left to the flat fallbacks.
    """
    out: dict[str, Decimal] = {}
    if not isinstance(tiers, list):
        return out
    parsed: list[tuple[int, Mapping[str, Any]]] = []
    for tier in tiers:
        bounds = tier.get("range") if isinstance(tier, Mapping) else None
        lower = to_decimal(bounds[0]) if isinstance(bounds, list | tuple) and bounds else None
        if lower is None or to_decimal(tier.get(f.INPUT)) is None:
            report.bad_values.append(f"{name}.tiered_pricing={tier!r}")
            continue
        parsed.append((int(lower), tier))
    wants_reasoning = to_decimal(entry.get(f.REASONING)) is not None or any(f.REASONING in t for _, t in parsed)
    model_output = to_decimal(entry.get(f.OUTPUT))
    for threshold, tier in sorted(parsed, key=lambda item: item[0]):
        suffix = f"_above_{_threshold_label(threshold)}_tokens" if threshold > 0 else ""
        tier_input = to_decimal(tier.get(f.INPUT))
        assert tier_input is not None  # checked above
        output = to_decimal(tier.get(f.OUTPUT))
        output = output if output is not None else model_output
        fields = {
            f.INPUT: tier_input,
            f.CACHE_READ: to_decimal(tier.get(f.CACHE_READ)),
            f.CACHE_WRITE: to_decimal(tier.get(f.CACHE_WRITE)),
            f.OUTPUT: output,
        }
        fields[f.CACHE_READ] = fields[f.CACHE_READ] if fields[f.CACHE_READ] is not None else tier_input
        fields[f.CACHE_WRITE] = fields[f.CACHE_WRITE] if fields[f.CACHE_WRITE] is not None else tier_input
        if wants_reasoning:
            reasoning = to_decimal(tier.get(f.REASONING))
            fields[f.REASONING] = reasoning if reasoning is not None else output
        out.update({base + suffix: value for base, value in fields.items() if value is not None})
    return out


#: Providers whose cache reads LiteLLM prices at a share of the input price when the map gives none.
DEFAULT_CACHE_READ_RATIO: dict[str, Decimal] = {"fireworks_ai": Decimal("0.5")}


def _plain(value: Any) -> Any:
    """JSON-ready copy of window data: integral Decimals (weekday numbers) back to int."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _off_peak(block: Any, report: ImportReport, name: str) -> dict[str, Any] | None:
    """LiteLLM's ``off_peak_pricing``: replacement prices and the UTC windows (per weekday) they apply in."""
    if not isinstance(block, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, value in block.items():
        if key in ("windows", "hours_utc", "weekday_timezone"):
            out[key] = _plain(value)
        elif f.parse_price_key(key) is not None:
            number = to_decimal(value)
            if number is None:
                report.bad_values.append(f"{name}.off_peak_pricing.{key}={value!r}")
            else:
                out[key] = price_literal(number)
    has_windows = "windows" in out or "hours_utc" in out
    return out if has_windows and any(f.parse_price_key(k) for k in out) else None


def convert_entry(entry: Mapping[str, Any], report: ImportReport, name: str) -> dict[str, Any] | None:
    """One LiteLLM model entry → a catalog model entry (provider, mode, token price fields), or None."""
    numbers: dict[str, Decimal] = {}
    for key, value in entry.items():
        if f.parse_price_key(key) is None:
            continue
        number = to_decimal(value)
        if number is None:
            if value is not None:
                report.bad_values.append(f"{name}.{key}={value!r}")
            continue
        numbers[key] = number
    if "tiered_pricing" in entry:
        numbers.update(_tiered_prices(entry, entry["tiered_pricing"], report, name))
    provider = str(entry.get("litellm_provider") or "")
    ratio = DEFAULT_CACHE_READ_RATIO.get(provider)
    if ratio is not None and f.CACHE_READ not in numbers and f.INPUT in numbers:
        numbers[f.CACHE_READ] = numbers[f.INPUT] * ratio
    if f.INPUT not in numbers and f.OUTPUT not in numbers:
        return None
    out: dict[str, Any] = {"provider": provider, "mode": str(entry.get("mode") or "chat")}
    if provider in INCLUSIVE_THRESHOLD_PROVIDERS and any("_above_" in k for k in numbers):
        out["threshold_inclusive"] = True
    off_peak = _off_peak(entry.get("off_peak_pricing"), report, name)
    if off_peak is not None:
        out["off_peak_pricing"] = off_peak
    out.update(sorted((k, price_literal(v)) for k, v in numbers.items()))
    return out


def convert_models(raw: Mapping[str, Any], modes: frozenset[str] = TOKEN_MODES) -> tuple[dict[str, Any], ImportReport]:
    """Every token-priced model of a LiteLLM map, in catalog form, plus a report of what was left out."""
    report = ImportReport()
    models: dict[str, Any] = {}
    for name, entry in raw.items():
        if name == "sample_spec" or not isinstance(entry, Mapping):
            continue
        if str(entry.get("mode") or "") not in modes:
            report.skipped_mode += 1
            continue
        converted = convert_entry(entry, report, name)
        if converted is None:
            report.skipped_unpriced.append(name)
            continue
        models[name] = converted
    report.kept = len(models)
    return dict(sorted(models.items())), report


def build_version(
    raw: Mapping[str, Any],
    *,
    source: str,
    effective_from: datetime,
    source_sha256: str | None = None,
    modes: frozenset[str] = TOKEN_MODES,
) -> tuple[dict[str, Any], ImportReport]:
    """One catalog version document from a LiteLLM map; ``price_version`` = ``<source>@<effective date>``."""
    models, report = convert_models(raw, modes)
    version: dict[str, Any] = {
        "price_version": f"{source}@{effective_from.date().isoformat()}",
        "effective_from": effective_from.isoformat().replace("+00:00", "Z"),
        "source": {"name": source, "sha256": source_sha256, "modes": sorted(modes)},
        "models": models,
    }
    return version, report


def read_litellm_source(path: Path) -> tuple[Any, str, str]:
    """``(price map, source label, sha256)`` from a LiteLLM JSON file or a litellm wheel.

    A wheel names its version (``litellm-1.80.0``), which becomes the provenance label; a bare JSON file is labelled
    ``litellm`` unless the caller says better.
    """
    if path.suffix == ".whl" or zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            data = wheel.read(WHEEL_MEMBER)
            version = None
            for member in wheel.namelist():
                if member.endswith(".dist-info/METADATA"):
                    meta = wheel.read(member).decode("utf-8", "replace")
                    match = re.search(r"^Version:\s*(\S+)", meta, re.MULTILINE)
                    version = match.group(1) if match else None
                    break
        label = f"litellm-{version}" if version else "litellm"
    else:
        data = path.read_bytes()
        label = "litellm"
    return load_json_exact(data), label, hashlib.sha256(data).hexdigest()


def catalog_document(versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": CATALOG_FORMAT, "format_version": CATALOG_FORMAT_VERSION, "versions": versions}


def dump_catalog(document: Mapping[str, Any]) -> str:
    """Compact JSON, one model per line inside each version, so diffs of a new import stay readable."""
    lines = ["{", f'"format":{json.dumps(document["format"])},"format_version":{document["format_version"]},']
    lines.append('"versions":[')
    versions = list(document["versions"])
    for i, version in enumerate(versions):
        head = {k: v for k, v in version.items() if k != "models"}
        lines.append(json.dumps(head, separators=(",", ":"), sort_keys=True)[:-1] + ',"models":{')
        items = list(version.get("models", {}).items())
        for j, (name, entry) in enumerate(items):
            sep = "," if j < len(items) - 1 else ""
            lines.append(f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}{sep}")
        lines.append("}}" + ("," if i < len(versions) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"
