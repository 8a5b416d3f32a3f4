"""Off-peak prices (DeepSeek and others): cheaper rates inside UTC time windows, possibly per weekday.

LiteLLM's ``off_peak_pricing`` block holds replacement prices plus windows: ``hours_utc`` ("HH:MM-HH:MM" or a list,
start inclusive, end exclusive, wrapping past midnight, start = end meaning the whole day) that apply every day,
and ``windows``: ``[{"hours_utc": ..., "weekdays": [1..7 or names]}]`` whose weekdays are read on the calendar of
``weekday_timezone`` (default UTC). The decision uses the event's ``occurred_at`` — integer arithmetic for UTC, so
the hot path builds no datetime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000

_WEEKDAYS: Final[dict[str, int]] = {
    "mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3, "thu": 4, "thur": 4,
    "thurs": 4, "thursday": 4, "fri": 5, "friday": 5, "sat": 6, "saturday": 6, "sun": 7, "sunday": 7,
}  # fmt: skip

Span = tuple[int, int]  # minutes of the UTC day: [start, end), wrapping when start >= end


def _spans(value: Any) -> tuple[Span, ...]:
    texts = (
        (value,)
        if isinstance(value, str)
        else tuple(v for v in value if isinstance(v, str))
        if isinstance(value, Sequence)
        else ()
    )
    spans: list[Span] = []
    for text in texts:
        try:
            start_text, end_text = text.split("-")
            sh, sm = (int(x) for x in start_text.strip().split(":"))
            eh, em = (int(x) for x in end_text.strip().split(":"))
        except ValueError:
            continue  # malformed windows are ignored, as in LiteLLM
        if 0 <= sh < 24 and 0 <= sm < 60 and 0 <= eh < 24 and 0 <= em < 60:
            spans.append((sh * 60 + sm, eh * 60 + em))
    return tuple(spans)


def _in_spans(spans: tuple[Span, ...], minute: int) -> bool:
    for start, end in spans:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


def _weekday(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):  # catalog JSON numbers arrive as Decimal
        return int(value) if value == int(value) and 1 <= value <= 7 else None
    if isinstance(value, str):
        text = value.strip().lower()
        return int(text) if text.isdigit() and 1 <= int(text) <= 7 else _WEEKDAYS.get(text)
    return None


@dataclass(frozen=True, slots=True)
class OffPeakSchedule:
    """When off-peak prices apply. ``rules``: (UTC spans, allowed ISO weekdays or None for every day)."""

    rules: tuple[tuple[tuple[Span, ...], frozenset[int] | None], ...]
    weekday_tz: tzinfo | None = None  # None = UTC calendar

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> OffPeakSchedule:
        rules: list[tuple[tuple[Span, ...], frozenset[int] | None]] = []
        every_day = _spans(block.get("hours_utc"))
        if every_day:
            rules.append((every_day, None))
        windows = block.get("windows")
        if isinstance(windows, Sequence) and not isinstance(windows, str):
            for rule in windows:
                if not isinstance(rule, Mapping):
                    continue
                spans = _spans(rule.get("hours_utc"))
                if not spans:
                    continue
                days = rule.get("weekdays")
                allowed: frozenset[int] | None = None
                if days is not None:
                    if isinstance(days, str) or not isinstance(days, Sequence):
                        continue
                    allowed = frozenset(d for d in map(_weekday, days) if d is not None)
                rules.append((spans, allowed))
        tz_name = block.get("weekday_timezone")
        weekday_tz: tzinfo | None = None
        if isinstance(tz_name, str) and tz_name.strip() and tz_name.strip().upper() != "UTC":
            try:
                weekday_tz = ZoneInfo(tz_name.strip())
            except (ValueError, ZoneInfoNotFoundError):
                weekday_tz = None
        return cls(tuple(rules), weekday_tz)

    def is_open(self, at_ms: int) -> bool:
        minute = (at_ms % DAY_MS) // MINUTE_MS
        weekday = 0
        for spans, allowed in self.rules:
            if allowed is not None:
                if not weekday:
                    if self.weekday_tz is None:
                        weekday = (at_ms // DAY_MS + 3) % 7 + 1  # 1970-01-01 was a Thursday (ISO 4)
                    else:
                        weekday = datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(self.weekday_tz).isoweekday()
                if weekday not in allowed:
                    continue
            if _in_spans(spans, minute):
                return True
        return False


def off_peak_prices(prices: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    """The model's prices with each field the block prices replaced, every size and service tier of it included.

    An off-peak rate replaces whatever would otherwise apply (the whole request at the flat off-peak rate, as in
    LiteLLM); fields the block leaves out keep their normal resolution, and missing cache prices fall back to the
    off-peak input rate through the usual bucket fallbacks.
    """
    from costplane.pricing.fields import parse_price_key

    replaced = {k for k in block if parse_price_key(k) is not None}
    bases = {parsed[0] for k in replaced if (parsed := parse_price_key(k)) is not None}
    kept = {k: v for k, v in prices.items() if (parsed := parse_price_key(k)) is None or parsed[0] not in bases}
    kept.update({k: block[k] for k in replaced})
    return kept
