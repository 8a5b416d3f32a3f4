"""Which rollup rows answer a time range exactly: whole days from the day table, whole hours at the edges from the
hour table, whole minutes at the edges from the minute table.

Pure arithmetic on minute-aligned UTC datetimes, so the cover is tested without ClickHouse. ``end`` None means
open-ended (everything stored from ``start`` on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

GRANULARITIES = ("minute", "hour", "day")
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Piece:
    """Rows of ``granularity`` whose bucket lies in ``[start, end)`` (``end`` None: no upper bound)."""

    granularity: str
    start: datetime
    end: datetime | None


def _floor(moment: datetime, granularity: str) -> datetime:
    if granularity == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _ceil(moment: datetime, granularity: str) -> datetime:
    floored = _floor(moment, granularity)
    return floored if floored == moment else floored + _STEP[granularity]


def cover(start: datetime, end: datetime | None, coarsest: str = "day") -> list[Piece]:
    """Disjoint pieces whose union is exactly ``[start, end)``, each at the coarsest level that holds it whole.

    ``start`` and ``end`` are whole minutes; ``coarsest`` caps the level (grouping by hour cannot read day rows).
    """
    if _floor(start, "minute") != start or (end is not None and _floor(end, "minute") != end):
        raise ValueError("cover() needs whole minutes")
    pieces: list[Piece] = []
    lo, hi, level = start, end, "minute"
    for coarser in GRANULARITIES[1 : GRANULARITIES.index(coarsest) + 1]:
        inner_lo = _ceil(lo, coarser)
        inner_hi = None if hi is None else _floor(hi, coarser)
        if inner_hi is not None and inner_lo >= inner_hi:
            break  # nothing whole at the coarser level: what is left is answered at this one
        if lo < inner_lo:
            pieces.append(Piece(level, lo, inner_lo))
        if hi is not None and inner_hi is not None and inner_hi < hi:
            pieces.append(Piece(level, inner_hi, hi))
        lo, hi, level = inner_lo, inner_hi, coarser
    if hi is None or lo < hi:
        pieces.append(Piece(level, lo, hi))
    return pieces
