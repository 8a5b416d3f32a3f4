"""Named reports over the raw events: one function the CLI and the worker's HTTP API both call.

``run_report(client, spec)`` returns plain JSON-ready dicts (money as an integer ``cost_nanos`` plus an exact
``cost_usd`` decimal string, never a float), so ``costplane report spend`` prints the same rows whether it
opened the database itself or asked the worker that owns an embedded chDB directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs, urlencode

from costplane.publisher.event import TOKEN_BUCKETS

#: Group-by dimensions and the SQL expression of each (the only text ever spliced into report SQL).
DIMENSIONS: dict[str, str] = {
    "tenant": "tenant", "team": "team", "feature": "feature", "user_id": "user_id", "model": "model",
    "provider": "provider", "env": "env", "status": "status", "service_tier": "service_tier", "plan": "plan",
    "turn": "turn", "minute": "toStartOfMinute(occurred_at)",
    "day": "toDate(occurred_at)", "hour": "toStartOfHour(occurred_at)", "month": "toStartOfMonth(occurred_at)",
}
MEASURES: tuple[str, ...] = ("events", "attempts", *TOKEN_BUCKETS, "cost_nanos")
NANOS_PER_USD = Decimal(1_000_000_000)


class ReportError(ValueError):
    """A report request that cannot be run (unknown dimension, bad time)."""


def parse_time(value: str) -> datetime:
    """ISO date/datetime (naive = UTC) or epoch milliseconds → aware UTC datetime."""
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        hint = "use ISO 8601 (2026-01-31 or 2026-01-31T12:00Z) or epoch ms"
        raise ReportError(f"cannot read time {value!r}: {hint}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """What to report: ``by`` dimensions, an optional half-open range ``[since, until)``, an optional tenant."""

    by: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    name: str = field(default="spend")

    def __post_init__(self) -> None:
        unknown = [d for d in self.by if d not in DIMENSIONS]
        if unknown or not self.by:
            raise ReportError(f"--by needs dimensions among {', '.join(DIMENSIONS)}; got {', '.join(self.by) or '∅'}")
        if len(set(self.by)) != len(self.by):
            raise ReportError("--by lists a dimension twice")
        if self.name != "spend":
            raise ReportError(f"unknown report {self.name!r}")

    @classmethod
    def parse(
        cls, by: str, since: str | None = None, until: str | None = None, tenant: str | None = None
    ) -> ReportSpec:
        return cls(
            by=tuple(d.strip() for d in by.split(",") if d.strip()),
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            tenant=tenant or None,
        )

    def to_query_string(self) -> str:
        """How the spec travels to the worker: ``GET /api/report?report=spend&by=…&since=…&until=…&tenant=…``."""
        params = {"report": self.name, "by": ",".join(self.by)}
        if self.since:
            params["since"] = self.since.isoformat()
        if self.until:
            params["until"] = self.until.isoformat()
        if self.tenant:
            params["tenant"] = self.tenant
        return urlencode(params)

    @classmethod
    def from_query_string(cls, query: str) -> ReportSpec:
        """Inverse of :meth:`to_query_string` (for the worker's ``/api/report`` handler)."""
        values = {k: v[-1] for k, v in parse_qs(query).items()}
        spec = cls.parse(values.get("by", ""), values.get("since"), values.get("until"), values.get("tenant"))
        if values.get("report", "spend") != "spend":
            raise ReportError(f"unknown report {values['report']!r}")
        return spec


def load_query(name: str) -> str:
    """A named query's text without its ``--`` comment lines (so placeholders named there are not substituted)."""
    text = (resources.files("costplane.sql") / "queries" / f"{name}.sql").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def build_sql(spec: ReportSpec, database: str) -> tuple[str, dict[str, Any]]:
    """The report's SQL (dimensions from the whitelist only) and its bound parameters."""
    filters: list[str] = []
    params: dict[str, Any] = {}
    if spec.since is not None:
        filters.append("AND occurred_at >= {since:DateTime64(3, 'UTC')}")
        params["since"] = spec.since
    if spec.until is not None:
        filters.append("AND occurred_at < {until:DateTime64(3, 'UTC')}")
        params["until"] = spec.until
    if spec.tenant is not None:
        filters.append("AND tenant = {tenant:String}")
        params["tenant"] = spec.tenant
    dims = "".join(f"{DIMENSIONS[d]} AS {d},\n    " for d in spec.by)
    sql = Template(load_query(spec.name)).substitute(
        db=database,
        dims=dims,
        filters=" ".join(filters),
        group_by="GROUP BY " + ", ".join(spec.by),
        order_by=", ".join(spec.by),
    )
    return sql, params


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def format_usd(cost_nanos: int) -> str:
    """Exact decimal dollars of integer nano-USD (9 decimals, no float on the way)."""
    return format(Decimal(cost_nanos).scaleb(-9), "f")


def run_report(client: Any, spec: ReportSpec, database: str) -> list[dict[str, Any]]:
    """Rows of the report: the ``by`` dimensions, then :data:`MEASURES`, then ``cost_usd``."""
    sql, params = build_sql(spec, database)
    result = client.query(sql, parameters=params)
    rows: list[dict[str, Any]] = []
    for raw in result.result_rows:
        row: dict[str, Any] = {d: _json_value(v) for d, v in zip(spec.by, raw[: len(spec.by)], strict=True)}
        for name, value in zip(MEASURES, raw[len(spec.by):], strict=True):
            row[name] = int(value)
        row["cost_usd"] = format_usd(row["cost_nanos"])
        rows.append(row)
    return rows
