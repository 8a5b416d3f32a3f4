"""A report's SQL: the named query from ``sql/queries/`` with its source, groupings and filters filled in.

Only whitelisted expressions (``costplane.reports.dimensions``) and generated aliases are spliced into the text;
every value — tenant, filters, an attribute's key, the range's bounds — is a bound parameter. The source is the
rollup family that keeps every dimension the request needs, covered exactly by day, hour and minute rows
(``costplane.reports.ranges``), or else the raw events in the rollups' shape; reports about whole requests or
sessions read the raw events directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from string import Template
from typing import Any

from costplane.reports.dimensions import FAMILY_DIMENSIONS, Dimension
from costplane.reports.errors import ReportError
from costplane.reports.options import Grouping, ReportOptions, parse_time
from costplane.reports.ranges import cover


def load_query(name: str) -> str:
    """A named query's text without its ``--`` comment lines (so placeholders named there are not substituted)."""
    text = (resources.files("costplane.sql") / "queries" / f"{name}.sql").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


@dataclass
class Query:
    """The SQL to run, its parameters, what it reads, and anything the reader must be told about the range."""

    sql: str
    params: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (SQL alias, JSON key) of each grouping
    since: datetime | None = None  # where the answer starts: later than asked when the raw TTL cut the range


@dataclass
class _Builder:
    """Collects bound parameters while expressions are written."""

    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"

    def expr(self, dim: Dimension, raw: bool) -> str:
        if dim.attribute is not None:
            key = self.bind(dim.attribute, "String")
            return f"nullIf(attributes[{key}], '')"
        return dim.raw_expr if raw else dim.expr


def _family_for(needed: set[str], preferred: tuple[str, ...]) -> str | None:
    for family in preferred:
        if needed <= FAMILY_DIMENSIONS[family]:
            return family
    return None


def raw_horizon(options: ReportOptions, raw_ttl_days: int) -> datetime | None:
    """The earliest moment raw events are still kept for (None: kept forever). The TTL counts from ingestion, so
    this is where the raw table stops being whole for events that arrived on time."""
    if raw_ttl_days <= 0:
        return None
    return (options.now - timedelta(days=raw_ttl_days)).replace(second=0, microsecond=0) + timedelta(minutes=1)


def _clip_to_raw(options: ReportOptions, raw_ttl_days: int, notes: list[str]) -> datetime:
    """The start a raw read can answer whole; says so in ``notes`` when that is later than asked."""
    horizon = raw_horizon(options, raw_ttl_days)
    if horizon is None or options.since >= horizon:
        return options.since
    if options.until is not None and options.until <= horizon:
        raise ReportError(
            f"raw events before {horizon:%Y-%m-%dT%H:%MZ} have expired (raw TTL {raw_ttl_days} days), and this "
            "report needs them for the whole range; pick a later range or a grouping the rollups keep"
        )
    notes.append(
        f"raw events before {horizon:%Y-%m-%dT%H:%MZ} have expired (raw TTL {raw_ttl_days} days): this report "
        f"covers {horizon:%Y-%m-%dT%H:%MZ} onwards, not {options.since:%Y-%m-%dT%H:%MZ}"
    )
    return horizon


_RAW_TIME = "DateTime64(3, 'UTC')"
_BUCKET_TIME = "DateTime('UTC')"


def _raw_range(b: _Builder, since: datetime, until: datetime | None) -> str:
    cond = f"occurred_at >= {b.bind(since, _RAW_TIME)}"
    if until is not None:
        cond += f" AND occurred_at < {b.bind(until, _RAW_TIME)}"
    return cond


def _as_text(grouping: Grouping, expr: str) -> str:
    """A text dimension as plain String (time dimensions keep their type, which the JSON formats)."""
    return expr if grouping.dimension.column == "bucket" else f"toString({expr})"


def _rollup_source(b: _Builder, family: str, options: ReportOptions, coarsest: str, database: str) -> str:
    parts = []
    for piece in cover(options.since, options.until, coarsest):
        cond = f"bucket >= {b.bind(piece.start, _BUCKET_TIME)}"
        if piece.end is not None:
            cond += f" AND bucket < {b.bind(piece.end, _BUCKET_TIME)}"
        if options.tenant is not None:
            cond += f" AND tenant = {b.bind(options.tenant, 'String')}"
        parts.append(f"SELECT * FROM {database}.rollup_{family}_{piece.granularity} WHERE {cond}")
    return "(" + "\n    UNION ALL ".join(parts) + ")"


def _where(b: _Builder, options: ReportOptions, raw: bool) -> list[str]:
    """``--where`` conditions: a time dimension compares as a moment (any form ``--since`` takes), the others as
    text (empty = missing)."""
    out = []
    for g, value in options.where:
        expr = b.expr(g.dimension, raw)
        if g.dimension.column == "bucket":
            moment = parse_time(value, options.now)
            out.append(f"toDateTime({expr}, 'UTC') = {b.bind(moment, _BUCKET_TIME)}")
        else:
            out.append(f"ifNull(toString({expr}), '') = {b.bind(value, 'String')}")
    return out


def build(
    query_name: str,
    options: ReportOptions,
    database: str,
    *,
    raw_only: bool = False,
    families: tuple[str, ...] = ("spend", "users"),
    needs: frozenset[str] = frozenset(),
    order_by: str = "",
    raw_ttl_days: int = 0,
    extra: dict[str, str] | None = None,
) -> Query:
    """Fill ``sql/queries/<query_name>.sql`` for ``options``.

    ``needs`` are rollup-shape columns the query reads besides the groupings (``unpriced``, ``user_id``);
    ``order_by`` is the report's ranking (after any time grouping, which always sorts first, oldest first).
    Placeholders: ``$dims`` (``expr AS dN,`` per grouping), ``$group_by``, ``$keys_then``, ``$then_dims``,
    ``$more_group``, ``$where``, ``$source``, ``$order_by``, ``$outer_order``, ``$limit``, ``$db``; for a query
    over requests, ``$inner_dims`` (each grouping's value on a request's first attempt) and ``$outer_dims``; for a
    query over re-sent history, ``$history_rows`` (``sql/queries/history_rows.sql`` with the same range and filters).
    """
    b = _Builder()
    notes: list[str] = []
    covered = options.since
    groupings = options.by
    needed = {g.dimension.column for g in (*groupings, *(g for g, _ in options.where))} - {"bucket"}
    needed |= set(needs)
    # Another price version re-prices each call, which only the raw events can do.
    family = None if raw_only or options.price_version is not None else _family_for(needed, families)
    every = (*groupings, *(g for g, _ in options.where))
    coarsest = "hour" if any(g.dimension.granularity == "hour" for g in every) else "day"

    aliases = [(f"d{i}", g.given) for i, g in enumerate(groupings)]
    if raw_only:
        since = covered = _clip_to_raw(options, raw_ttl_days, notes)
        where = [_raw_range(b, since, options.until)]
        if options.tenant is not None:
            where.append(f"tenant = {b.bind(options.tenant, 'String')}")
        where += _where(b, options, raw=True)
        # Text, not LowCardinality, inside argMin: ClickHouse keeps LowCardinality states several times slower.
        inner = "".join(
            f"argMin({_as_text(g, b.expr(g.dimension, True))}, attempt) AS d{i},\n        "
            for i, g in enumerate(groupings)
        )
        dims = "".join(f"{b.expr(g.dimension, True)} AS d{i},\n    " for i, g in enumerate(groupings))
        source = "raw events (usage_events)"
        source_sql = ""
    else:
        if family is None:
            since = covered = _clip_to_raw(options, raw_ttl_days, notes)
            raw_where = _raw_range(b, since, options.until)
            tenant_cond = f"AND tenant = {b.bind(options.tenant, 'String')}" if options.tenant is not None else ""
            source_sql = (
                "("
                + Template(load_query("raw_as_rollup")).substitute(db=database, range=raw_where, tenant=tenant_cond)
                + ")"
            )
            source = "raw events (usage_events)"
        else:
            source_sql = _rollup_source(b, family, options, coarsest, database)
            source = f"rollup_{family}_* ({coarsest} and finer)"
        where = ["1 = 1", *_where(b, options, raw=False)]
        dims = "".join(f"{b.expr(g.dimension, False)} AS d{i},\n    " for i, g in enumerate(groupings))
        inner = ""
    keys = [a for a, _ in aliases]
    time_keys = [f"d{i}" for i, g in enumerate(groupings) if g.dimension.column == "bucket"]
    order = [*time_keys, *([order_by] if order_by else []), *[k for k in keys if k not in time_keys]]
    limit = options.top
    template = load_query(query_name)
    if "{production:" in template:
        b.params["production"] = list(options.production_envs)
    history_rows = session_history_rows = ""
    if "$history_rows" in template:
        history_rows = Template(load_query("history_rows")).substitute(
            db=database, dims=dims, where=" AND ".join(where)
        )
    if "$session_history_rows" in template:  # only attempts in sessions: they alone carry history
        session_history_rows = Template(load_query("history_rows")).substitute(
            db=database, dims=dims, where=" AND ".join([*where, "session_id IS NOT NULL AND turn IS NOT NULL"])
        )
    text = Template(template).safe_substitute(
        history_rows=history_rows,
        session_history_rows=session_history_rows,
        db=database,
        dims=dims,
        inner_dims=inner,
        outer_dims="".join(f"{k},\n    " for k in keys),
        partition_by=f"PARTITION BY {', '.join(keys)}" if keys else "",
        group_by=f"GROUP BY {', '.join(keys)}" if keys else "",
        keys_then="".join(f"{k}, " for k in keys),
        then_dims="".join(f", {k}" for k in keys),
        more_group="".join(f", {k}" for k in keys),
        where=" AND ".join(where),
        source=source_sql,
        order_by=", ".join(order) if order else "1",
        outer_order=", ".join(["_tenant_cost_nanos DESC", "_tenant", *order]) if order else "_tenant",
        limit=f"LIMIT {int(limit)}" if limit is not None else "",
        **(extra or {}),
    )
    return Query(text, b.params, source, notes, aliases, covered)
