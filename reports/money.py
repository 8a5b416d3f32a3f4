"""Money and ratios as reports show them: integer nano-USD, an exact decimal string beside it, readable dollars."""

from __future__ import annotations

from decimal import Decimal

from costplane.pricing.cost import round_half_even


def usd(nanos: int) -> str:
    """Exact decimal dollars of integer nano-USD, always nine decimals (``"12.000000500"``); no float on the way."""
    return format(Decimal(nanos).scaleb(-9), "f")


def usd_display(nanos: int) -> str:
    """Dollars for people: cents with thousands separators, or six decimals below a cent (``$0.000012``)."""
    amount = Decimal(nanos).scaleb(-9)
    if nanos != 0 and abs(nanos) < 10_000_000:
        return f"${amount:.6f}"
    return f"${amount:,.2f}"


def mean_nanos(total_nanos: int, count: int) -> int | None:
    """An average amount, rounded half-even to whole nano-USD like every cost; None for nothing to average."""
    return round_half_even(total_nanos, count) if count else None


def fraction(part: int, whole: int) -> float | None:
    """A ratio from 0 to 1 (None when the whole is 0: a share of nothing is not 0 %)."""
    return part / whole if whole else None


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"
