"""Running a report against ClickHouse: the one function the CLI and the worker's HTTP API both call.

``run_report(client, options, database)`` fills the report's named query (``costplane.reports.sql``), runs it,
and hands the rows to the report's own math (``costplane.reports.definitions``), so ``costplane report`` prints the
same rows whether it opened the database itself or asked the worker that owns an embedded chDB directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from costplane.pricing.catalog import PriceCatalog
from costplane.reports.base import Assumptions, Context, Prepared
from costplane.reports.definitions import REPORTS, Report, Row, per_request, present, users_options
from costplane.reports.errors import ReportError
from costplane.reports.focus import focus_rows
from costplane.reports.options import ReportOptions
from costplane.reports.routing import RoutingMap
from costplane.reports.sql import Query, build

#: Rows ``requests --by request`` lists unless ``--top`` says otherwise.
REQUEST_LIST_TOP = 50


@dataclass
class ReportResult:
    """A report's public rows (JSON-ready), its one-line reading, what it read, and notes on the range."""

    report: str
    rows: list[Row]
    reading: str
    source: str
    notes: list[str] = field(default_factory=list)
    by: list[str] = field(default_factory=list)
    since: datetime | None = None  # where the answer starts (later than asked when the raw TTL cut the range)

    def to_json(self) -> dict[str, Any]:
        return {
            "report": self.report,
            "rows": self.rows,
            "reading": self.reading,
            "source": self.source,
            "notes": self.notes,
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> ReportResult:
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("the worker's report answer is not a report object")
        since = datetime.fromisoformat(data["since"]) if data.get("since") else None
        return cls(
            str(data["report"]),
            data["rows"],
            str(data.get("reading", "")),
            str(data.get("source", "")),
            list(data.get("notes", [])),
            list(data.get("by", [])),
            since,
        )


def report_definition(name: str) -> Report:
    found = REPORTS.get(name)
    if found is None:
        raise ReportError(f"unknown report {name!r}: choose from {', '.join(REPORTS)} (costplane report --list)")
    return found


def resolved_options(report: Report, options: ReportOptions) -> ReportOptions:
    """The options with the report's default grouping applied (and its own grouping rules)."""
    if not options.by:
        options = options.with_by(report.default_by)
    if report.name == "users":
        options = users_options(options)
    missing = [name for name in report.always_by if all(g.dimension.name != name for g in options.by)]
    if missing:
        options = options.with_by((*(g.given for g in options.by), *missing))
    if report.name == "requests" and per_request(options) and options.top is None:
        options = replace(options, top=REQUEST_LIST_TOP)
    if report.name == "requests" and any(g.dimension.name == "request" for g in options.by) and len(options.by) > 1:
        raise ReportError("--by request lists single requests and takes no other dimension")
    return options


def assumptions(catalog: PriceCatalog) -> Assumptions:
    """The savings reports' assumptions from ``COSTPLANE_REPORTS_*`` (the routing file read here)."""
    import yaml

    from costplane.config import ReportSettings, load_settings

    settings = load_settings(ReportSettings)

    def names(text: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",") if n.strip())

    routing = None
    if settings.routing_file is not None:
        path = settings.routing_file
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ReportError(f"cannot read the routing map {path}: {str(exc).splitlines()[0]}") from None
        routing = RoutingMap.from_document(document, str(path), catalog)
    return Assumptions(names(settings.background_features), names(settings.batch_envs), routing)


def _prepared(client: Any, report: Report, options: ReportOptions, database: str) -> Prepared:
    if report.prepare is None:
        return Prepared()
    from costplane.pricing.catalog import default_catalog

    def fetch(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in client.query(sql, parameters=params).result_rows]

    catalog = default_catalog()
    return report.prepare(Context(options, database, fetch, catalog, assumptions(catalog)))


def _query(client: Any, report: Report, options: ReportOptions, database: str, raw_ttl_days: int) -> Query:
    query_name = "request_list" if report.name == "requests" and per_request(options) else report.query
    prepared = _prepared(client, report, options, database)
    query = build(
        query_name,
        options,
        database,
        raw_only=report.raw_only,
        families=report.families,
        needs=report.needs,
        order_by=report.order_by,
        raw_ttl_days=raw_ttl_days,
        extra=prepared.sql,
    )
    query.params.update(prepared.params)
    query.notes.extend(prepared.notes)
    if options.price_version is not None:
        _reprice_raw(client, query, options, database)
    return query


def _reprice_raw(client: Any, query: Query, options: ReportOptions, database: str) -> None:
    """Read the raw events with ``cost_nanos`` re-priced per call under ``options.price_version``.

    Every read of the raw table becomes a read of it with the cost replaced (a result-cache hit stays free, a
    model the version does not price costs 0); the per-event savings amounts keep their stored rating.
    """
    from costplane.pricing.catalog import default_catalog
    from costplane.pricing.repricing import UnknownVersion
    from costplane.reports.repricing_sql import compile_routes, half_even

    catalog = default_catalog()
    where = ["occurred_at >= {pv_since:DateTime64(3, 'UTC')}"]
    params: dict[str, Any] = {"pv_since": options.since}
    if options.until is not None:
        where.append("occurred_at < {pv_until:DateTime64(3, 'UTC')}")
        params["pv_until"] = options.until
    pairs = client.query(
        f"SELECT DISTINCT provider, model FROM {database}.usage_events WHERE {' AND '.join(where)}", parameters=params
    ).result_rows
    try:
        compiled = compile_routes(
            catalog,
            {(str(p), str(m)): (str(p), str(m)) for p, m in pairs},
            param_prefix="pv",
            price_version=options.price_version,
        )
    except UnknownVersion as exc:
        raise ReportError(str(exc)) from None
    repriced = (
        f"(SELECT * REPLACE (toInt64(if(ifNull(result_cache_hit, false), 0, "
        f"ifNull({half_even('_pv_units', '_pv_div')}, 0))) AS cost_nanos) FROM (SELECT *, "
        f"{compiled.units} AS _pv_units, {compiled.divisor} AS _pv_div FROM {database}.usage_events))"
    )
    query.sql = query.sql.replace(f"{database}.usage_events", repriced)
    query.params.update(compiled.params)
    query.notes.append(
        f"costs re-priced per call at price version {options.price_version}, from the raw events; "
        "the savings amounts (cache, system prompt, prefix) keep their stored rating"
    )


def _check_tenant(client: Any, options: ReportOptions, database: str) -> None:
    """An unknown tenant is a mistake worth saying, not an empty report."""
    if options.tenant is None:
        return
    found = client.query(
        f"SELECT 1 FROM (SELECT 1 FROM {database}.rollup_spend_day WHERE tenant = {{t:String}} LIMIT 1 "
        f"UNION ALL SELECT 1 FROM {database}.usage_events WHERE tenant = {{t:String}} LIMIT 1) LIMIT 1",
        parameters={"t": options.tenant},
    ).result_rows
    if not found:
        raise ReportError(f"no tenant {options.tenant!r} in {database}: check the name (`costplane report spend`)")


def _rows(client: Any, query: Query) -> list[Row]:
    result = client.query(query.sql, parameters=query.params)
    names = list(result.column_names)
    return [dict(zip(names, r, strict=True)) for r in result.result_rows]


def run_report(client: Any, options: ReportOptions, database: str, raw_ttl_days: int = 0) -> ReportResult:
    """Run one report: its rows (JSON-ready), its reading, its source and notes. Raises ReportError on bad input."""
    report = report_definition(options.report)
    options = resolved_options(report, options)
    _check_tenant(client, options, database)
    query = _query(client, report, options, database, raw_ttl_days)
    finished = report.finish(_rows(client, query), options)
    reading = report.reading(finished, options) if finished else "nothing in this range"
    return ReportResult(
        report.name, present(finished), reading, query.source, query.notes, [g.given for g in options.by], query.since
    )


def run_focus(client: Any, options: ReportOptions, database: str, raw_ttl_days: int = 0) -> list[dict[str, str]]:
    """The chargeback report as FOCUS rows (``costplane report chargeback --format focus``)."""
    report = report_definition("chargeback")
    options = resolved_options(report, options)
    _check_tenant(client, options, database)
    query = build(
        "focus",
        options,
        database,
        families=("spend",),
        needs=frozenset({"provider", "model"}),
        raw_ttl_days=raw_ttl_days,
    )
    return focus_rows(_rows(client, query), options)


def answer_api(client: Any, query_string: str, database: str, raw_ttl_days: int = 0) -> Any:
    """What ``GET /api/report?<query_string>`` returns: the report object (rows, reading, source, notes), or with
    ``format=focus`` the FOCUS rows; ``report=rerate`` runs ``costplane rerate`` here (the caller holds the client,
    so the sink waits). Raises ReportError on a bad request (HTTP 400)."""
    from urllib.parse import parse_qs

    if parse_qs(query_string).get("report", [""])[-1] == "rerate":
        from costplane.streams.sink.rerate import answer

        return answer(client, query_string, database)
    options = ReportOptions.from_query_string(query_string)
    if parse_qs(query_string).get("format", [""])[-1] == "focus":
        return run_focus(client, options, database, raw_ttl_days)
    return run_report(client, options, database, raw_ttl_days).to_json()
