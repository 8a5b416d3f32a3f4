"""The dimensions a report can group or filter by, and the SQL expression of each.

Every report reads rows of one shape: a rollup table's rows, or raw events projected into that shape
(``sql/queries/raw_as_rollup.sql``). ``expr`` is a dimension's expression over that shape, ``raw_expr`` over the raw
table itself (for the reports that need whole requests or sessions). Only these expressions are ever spliced into
report SQL; values (and an attribute's key) are bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from costplane.reports.errors import ReportError
from costplane.sql.rollups import ROLLUP_DIMENSIONS

#: Rollup families and the dimensions each keeps.
FAMILY_DIMENSIONS: dict[str, frozenset[str]] = {name: frozenset(dims) for name, dims in ROLLUP_DIMENSIONS.items()}


@dataclass(frozen=True, slots=True)
class Dimension:
    """A dimension: its canonical name, the row column it needs, and its SQL over rollup rows and raw rows.

    ``column`` is the rollup-shape column the dimension reads (``bucket`` for time dimensions); ``granularity``
    is the coarsest rollup that can answer it (``hour`` grouping cannot read day rows); ``attribute`` is the key
    of an ``attr.KEY`` dimension, bound as a parameter.
    """

    name: str
    column: str
    expr: str
    raw_expr: str
    granularity: str = "day"
    attribute: str | None = None

    @property
    def raw_only(self) -> bool:
        return not any(self.column in dims for dims in FAMILY_DIMENSIONS.values()) and self.column != "bucket"


def _plain(name: str, column: str | None = None, nullable: bool = True) -> Dimension:
    col = column or name
    return Dimension(name, col, f"nullIf({col}, '')" if nullable else col, col)


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        _plain("tenant", nullable=False),
        _plain("team"),
        _plain("feature"),
        _plain("user", "user_id"),
        _plain("model", nullable=False),
        _plain("provider", nullable=False),
        _plain("env"),
        _plain("plan"),
        _plain("status", nullable=False),
        _plain("service_tier"),
        _plain("operation"),
        _plain("session", "session_id"),
        _plain("request", "request_id", nullable=False),
        Dimension("day", "bucket", "toDate(bucket)", "toDate(occurred_at)"),
        Dimension("hour", "bucket", "toStartOfHour(bucket)", "toStartOfHour(occurred_at)", granularity="hour"),
        Dimension("month", "bucket", "toStartOfMonth(bucket)", "toStartOfMonth(occurred_at)"),
    )
}
#: Other names accepted for the same dimension (the event's own field names).
ALIASES: dict[str, str] = {"user_id": "user", "session_id": "session", "request_id": "request"}
ATTRIBUTE_PREFIX = "attr."


def resolve_dimension(name: str) -> Dimension:
    """The dimension a user's name means (``user_id`` → user, ``attr.region`` → that attribute)."""
    if name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX):
        key = name[len(ATTRIBUTE_PREFIX) :]
        return Dimension(name, "attributes", "", "", attribute=key)
    found = DIMENSIONS.get(ALIASES.get(name, name))
    if found is None:
        known = ", ".join([*DIMENSIONS, *ALIASES, "attr.KEY"])
        raise ReportError(f"unknown dimension {name!r}: choose from {known}")
    return found
