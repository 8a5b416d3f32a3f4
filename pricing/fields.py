"""Price field names: LiteLLM's vocabulary, which the costplane catalog keeps as is.

Keeping LiteLLM's names means a price in our catalog can be checked against the public map by eye, and a user's own
LiteLLM-format map needs no translation. Only per-token text prices are kept: a field is a *base* name, optionally
followed by a size tier (``_above_200k_tokens``) and a service tier (``_batches``, ``_priority``, ``_flex``).
"""

from __future__ import annotations

import re
from typing import Final

INPUT: Final = "input_cost_per_token"
CACHE_READ: Final = "cache_read_input_token_cost"
CACHE_HIT: Final = "input_cost_per_token_cache_hit"  # DeepSeek's older name for the cache-read price
CACHE_WRITE: Final = "cache_creation_input_token_cost"  # 5-minute cache write
CACHE_WRITE_1H: Final = "cache_creation_input_token_cost_above_1hr"
OUTPUT: Final = "output_cost_per_token"
REASONING: Final = "output_cost_per_reasoning_token"

#: Longest first, so the alternation never stops at a shorter prefix.
BASE_FIELDS: Final[tuple[str, ...]] = (CACHE_WRITE_1H, CACHE_WRITE, CACHE_READ, CACHE_HIT, REASONING, INPUT, OUTPUT)

#: Service tiers of the event schema and the LiteLLM suffix that prices each.
TIER_SUFFIX: Final[dict[str, str]] = {"standard": "", "batch": "_batches", "priority": "_priority", "flex": "_flex"}
SERVICE_TIERS: Final[tuple[str, ...]] = ("standard", "batch", "priority", "flex")

#: Names providers and SDKs use for the same tiers (OpenAI reports "default"/"auto"/"scale").
TIER_ALIASES: Final[dict[str, str]] = {
    "": "standard",
    "standard": "standard",
    "default": "standard",
    "auto": "standard",
    "scale": "standard",
    "on_demand": "standard",
    "batch": "batch",
    "batches": "batch",
    "priority": "priority",
    "fast": "priority",
    "flex": "flex",
}

_SUFFIX_ALT = "|".join(s for s in TIER_SUFFIX.values() if s)
PRICE_KEY: Final = re.compile(
    rf"^(?P<base>{'|'.join(BASE_FIELDS)})"
    rf"(?P<tier1>{_SUFFIX_ALT})?"
    r"(?:_above_(?P<n>\d+)(?P<k>k?)_tokens)?"
    rf"(?P<tier2>{_SUFFIX_ALT})?$"
)


def parse_price_key(key: str) -> tuple[str, int, str] | None:
    """``(base field, size threshold in tokens or 0, tier suffix)`` of a price key, or None if not a token price.

    >>> parse_price_key("cache_read_input_token_cost_above_200k_tokens_batches")
    ('cache_read_input_token_cost', 200000, '_batches')
    """
    match = PRICE_KEY.match(key)
    if match is None or (match["tier1"] and match["tier2"]):
        return None
    threshold = int(match["n"]) * (1000 if match["k"] else 1) if match["n"] else 0
    return match["base"], threshold, match["tier1"] or match["tier2"] or ""


def normalize_tier(service_tier: str | None) -> str:
    """The schema's tier name for whatever a caller passes; unknown names price as standard."""
    if service_tier is None:
        return "standard"
    return TIER_ALIASES.get(service_tier.strip().lower(), "standard")
