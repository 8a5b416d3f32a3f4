"""What every report is made of: its definition, the context its SQL is prepared in, and the row helpers.

A report's rows come back from its named query (``sql/queries/<query>.sql``) with the groupings aliased ``d0``,
``d1``…, its measures under their JSON names, and helper totals prefixed ``_``. ``finish`` turns them into the
public rows (groupings under the names given to ``--by``, ratios and averages computed from the integers), and
``reading`` says in one line what the rows mean. :func:`present` then makes them JSON: every ``*_nanos`` gets an
exact ``*_usd`` string beside it and the ``_`` helpers go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from costplane.pricing.catalog import PriceCatalog
from costplane.reports.money import usd
from costplane.reports.options import ReportOptions
from costplane.reports.routing import RoutingMap

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Report:
    """One report. ``query`` names its SQL; ``raw_only`` reports read whole requests or sessions from raw events,
    the others the first rollup family in ``families`` that keeps every grouping (raw events otherwise)."""

    name: str
    question: str
    query: str
    default_by: tuple[str, ...]
    columns: tuple[str, ...]
    order_by: str
    finish: Callable[[list[Row], ReportOptions], list[Row]]
    reading: Callable[[list[Row], ReportOptions], str]
    raw_only: bool = False
    families: tuple[str, ...] = ("spend", "users")
    needs: frozenset[str] = field(default_factory=frozenset)
    always_by: tuple[str, ...] = ()
    prepare: Callable[[Context], Prepared] | None = None


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the savings reports assume about the organisation's traffic (from ``COSTPLANE_REPORTS_*``)."""

    background_features: tuple[str, ...] = ()
    batch_envs: tuple[str, ...] = ("batch", "jobs", "offline")
    routing: RoutingMap | None = None  # None: the shipped defaults


@dataclass(frozen=True, slots=True)
class Context:
    """What a report's ``prepare`` step may use: the request, the database, a way to ask it a question, the
    catalog and the assumptions."""

    options: ReportOptions
    database: str
    fetch: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]
    catalog: PriceCatalog
    assumptions: Assumptions


@dataclass
class Prepared:
    """SQL fragments (placeholders of the report's query) and their bound parameters, computed before it runs."""

    sql: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- shared helpers ---------------------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def group_values(row: Row, options: ReportOptions) -> Row:
    """The groupings of a query row under the names the user gave."""
    return {g.given: json_value(row[f"d{i}"]) for i, g in enumerate(options.by)}


def row_label(row: Row, options: ReportOptions, extra: Sequence[str] = ()) -> str:
    values = [row.get(k) for k in extra] + [row.get(g.given) for g in options.by]
    return "/".join("(none)" if v is None else str(v) for v in values) or "everything"


def int_fields(row: Row, names: Sequence[str]) -> Row:
    return {n: int(row[n]) for n in names}


def first_total(rows: list[Row], key: str) -> int:
    return int(rows[0][key]) if rows else 0


def totals(rows: list[Row], *keys: str) -> tuple[int, ...]:
    """The range-wide helper totals every row carries (read from the first row; 0 when there are none)."""
    return tuple(first_total(rows, key) for key in keys)


def rows_of(
    rows: list[Row],
    options: ReportOptions,
    fields: Callable[[Row], Row],
    carry: Mapping[str, str] | None = None,
    lead: Callable[[Row], Row] | None = None,
) -> list[Row]:
    """A report's public rows, one per query row: ``lead`` (columns before the groupings), the groupings under the
    names given to ``--by``, the report's own ``fields``, then the helper totals its reading needs (``carry``: helper
    key → query column; helpers start with ``_``, so :func:`present` drops them)."""
    carried = carry or {}
    return [
        {
            **(lead(r) if lead is not None else {}),
            **group_values(r, options),
            **fields(r),
            **{key: r[column] for key, column in carried.items()},
        }
        for r in rows
    ]


def present(rows: list[Row]) -> list[Row]:
    """JSON rows: an exact ``*_usd`` beside every ``*_nanos``, helpers (``_``-prefixed keys) dropped."""
    out: list[Row] = []
    for row in rows:
        shown: Row = {}
        for key, value in row.items():
            if key.startswith("_"):
                continue
            shown[key] = value
            if key.endswith("_nanos"):
                shown[key[: -len("_nanos")] + "_usd"] = None if value is None else usd(int(value))
        out.append(shown)
    return out
