"""Overrides: negotiated discounts and custom models, applied when a catalog is loaded.

File (YAML or JSON)::

    discounts:
      providers: {openai: 15}        # percent off every price of the provider's models
      models: {"gpt-4o*": 20}        # percent off matching models (shell-style pattern); beats a provider discount
    models:                          # models the public map lacks (fine-tunes, self-hosted, new releases)
      acme-large:
        provider: acme
        mode: chat
        input_cost_per_token: "0.000002"
        output_cost_per_token: "0.000008"

Discounts apply to catalog models of every version; custom models are taken at their own prices (they already
are what you pay) and appear in every version, replacing a catalog entry of the same name. A catalog loaded with
overrides reports ``<price_version>+overrides.<sha256 prefix of the file>`` so re-rated history says what it used.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from costplane.pricing import fields as f
from costplane.pricing.litellm_import import load_json_exact, to_decimal

HUNDRED = Decimal(100)


class OverridesError(ValueError):
    """The overrides file is malformed; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class Overrides:
    provider_discounts: Mapping[str, Decimal] = field(default_factory=dict)
    model_discounts: tuple[tuple[str, Decimal], ...] = ()
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tag: str = ""

    def discount_for(self, name: str, provider: str) -> Decimal | None:
        """Percent off for a catalog model: the first matching model pattern, else its provider's discount."""
        for pattern, percent in self.model_discounts:
            if fnmatch.fnmatchcase(name, pattern):
                return percent
        provider = provider.lower()
        for key, percent in self.provider_discounts.items():
            if provider == key or provider.startswith(key + "-"):
                return percent
        return None


def _percent(value: Any, where: str) -> Decimal:
    number = to_decimal(value)
    if number is None or number > HUNDRED:
        raise OverridesError(f"{where}: discount must be a percent between 0 and 100, got {value!r}")
    return Decimal(number)


def _custom_model(name: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise OverridesError(f"models.{name}: expected a mapping of price fields")
    out: dict[str, Any] = {"provider": str(entry.get("provider") or ""), "mode": str(entry.get("mode") or "chat")}
    if str(entry.get("threshold_inclusive", "")).lower() in ("true", "yes", "1"):
        out["threshold_inclusive"] = True
    for key, value in entry.items():
        if key in ("provider", "mode", "threshold_inclusive"):
            continue
        if f.parse_price_key(key) is None:
            raise OverridesError(f"models.{name}.{key}: not a per-token price field")
        number = to_decimal(value)
        if number is None:
            raise OverridesError(f"models.{name}.{key}: expected a non-negative number, got {value!r}")
        out[key] = number
    if f.INPUT not in out and f.OUTPUT not in out:
        raise OverridesError(f"models.{name}: needs at least {f.INPUT} or {f.OUTPUT}")
    return out


def parse_overrides(document: Any, tag: str = "") -> Overrides:
    """Validate an overrides document (already parsed) into :class:`Overrides`."""
    if document is None:
        return Overrides(tag=tag)
    if not isinstance(document, Mapping):
        raise OverridesError("overrides: expected a mapping with 'discounts' and/or 'models'")
    unknown = set(document) - {"discounts", "models"}
    if unknown:
        raise OverridesError(f"overrides: unknown keys {sorted(unknown)}")
    discounts = document.get("discounts") or {}
    if not isinstance(discounts, Mapping) or set(discounts) - {"providers", "models"}:
        raise OverridesError("discounts: expected {providers: {name: percent}, models: {pattern: percent}}")
    providers = {
        str(k).lower(): _percent(v, f"discounts.providers.{k}") for k, v in (discounts.get("providers") or {}).items()
    }
    model_discounts = tuple(
        (str(k), _percent(v, f"discounts.models.{k}")) for k, v in (discounts.get("models") or {}).items()
    )
    models_doc = document.get("models") or {}
    if not isinstance(models_doc, Mapping):
        raise OverridesError("models: expected a mapping of model name → prices")
    models = {str(name): _custom_model(str(name), entry) for name, entry in models_doc.items()}
    return Overrides(provider_discounts=providers, model_discounts=model_discounts, models=models, tag=tag)


def load_overrides(path: Path) -> Overrides:
    """Read an overrides file; YAML unless it ends in ``.json`` (YAML numbers become exact via their text)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OverridesError(f"cannot read overrides {path}: {exc.strerror or exc}") from None
    tag = "overrides." + hashlib.sha256(data).hexdigest()[:8]
    if path.suffix.lower() == ".json":
        document = load_json_exact(data)
    else:
        import yaml  # only needed for YAML overrides

        # BaseLoader keeps every scalar a string, so "0.0000025" never passes through a float.
        try:
            document = yaml.load(data.decode("utf-8"), Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader is safe
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise OverridesError(f"{path}: not valid YAML: {' '.join(str(exc).split())[:300]}") from exc
    return parse_overrides(document, tag)


def apply_discount(entry: Mapping[str, Any], percent: Decimal) -> dict[str, Any]:
    """A copy of a model entry with every price field reduced by ``percent`` (exact)."""
    factor = (HUNDRED - percent) / HUNDRED
    out = {k: (v * factor if isinstance(v, Decimal) else v) for k, v in entry.items()}
    block = entry.get("off_peak_pricing")
    if isinstance(block, Mapping):
        out["off_peak_pricing"] = {k: (v * factor if isinstance(v, Decimal) else v) for k, v in block.items()}
    return out
