"""``costplane forecast``: month-end projections per tenant and per member of every monthly budget.

The spend per day comes from the ``spend`` report (the day rollups, through the same local-or-worker path as every
report), grouped by day and the tenant, or by the budget's scope dimensions; :func:`forecast_rows` turns those rows
into projections with :func:`costplane.reports.projection.project` — the same function the worker's
``budget_forecast`` alert uses. A budget in a timezone other than UTC is read per hour and each hour counted in the
local day it starts in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from costplane.budgets import Budget
from costplane.reports.errors import ReportError
from costplane.reports.options import ReportOptions, floor_minute
from costplane.reports.projection import Projection, history_start, project

Row = dict[str, Any]

#: JSON keys of a forecast row, in order (``present`` adds ``*_usd`` after each ``*_nanos``).
COLUMNS = (
    "tenant",
    "budget_id",
    "member",
    "month",
    "basis",
    "history_days",
    "month_to_date_nanos",
    "projected_nanos",
    "low_nanos",
    "high_nanos",
    "limit_nanos",
    "projected_share",
    "projected_cross_date",
)


@dataclass(frozen=True, slots=True)
class SpendRequest:
    """One spend query a forecast needs: whose days, grouped how, in which timezone."""

    budget: Budget | None  # None: per tenant
    options: ReportOptions
    zone: str

    @property
    def grain(self) -> str:
        return self.options.by[0].given


def _since(now: datetime, zone: str) -> str:
    local = now.astimezone(ZoneInfo(zone))
    start = datetime.combine(history_start(local), time(), local.tzinfo).astimezone(UTC)
    return start.replace(minute=0).isoformat()


def tenant_request(now: datetime, tenant: str | None, until: datetime | None) -> SpendRequest:
    """Spend per UTC day and tenant, from the look-back's first day."""
    options = ReportOptions.parse("spend", since=_since(now, "UTC"), tenant=tenant, by=["day", "tenant"], now=now)
    return SpendRequest(None, _until(options, until), "UTC")


def budget_request(budget: Budget, now: datetime, tenant: str | None, until: datetime | None) -> SpendRequest:
    """Spend per local day of the budget's members: its scope's wildcards grouped, its fixed values filtered."""
    if budget.period != "month":
        raise ReportError(f"budget {budget.id} is per {budget.period}: forecast projects monthly budgets")
    if budget.unit != "usd":
        raise ReportError(f"budget {budget.id} counts tokens: forecast projects budgets in USD")
    grain = "day" if budget.tz == "UTC" else "hour"
    dims = list(budget.scope)
    scope_tenant = budget.scope.get("tenant", "*")
    if tenant is not None and scope_tenant not in ("*", tenant):
        raise ReportError(f"budget {budget.id} is for tenant {scope_tenant}, not {tenant}")
    # Fixed scope values (the tenant included) filter; a budget whose tenant has no spend yet is not an error.
    fixed = {**budget.scope, **({"tenant": tenant} if tenant is not None else {})}
    wheres = [f"{d}={v}" for d, v in fixed.items() if v != "*"]
    options = ReportOptions.parse("spend", since=_since(now, budget.tz), by=[grain, *dims], where=wheres, now=now)
    return SpendRequest(budget, _until(options, until), budget.tz)


def _until(options: ReportOptions, until: datetime | None) -> ReportOptions:
    if until is None:
        return options
    from dataclasses import replace

    return replace(options, until=floor_minute(until))


def requests_for(
    budgets: Iterable[Budget], now: datetime, tenant: str | None, budget_id: str | None, until: datetime | None = None
) -> list[SpendRequest]:
    """What to read: the tenants (unless one budget was asked for) and every monthly USD budget in scope."""
    chosen = list(budgets)
    if budget_id is not None:
        chosen = [b for b in chosen if b.id == budget_id]
        if not chosen:
            raise ReportError(f"no budget {budget_id!r} (costplane budget list)")
        return [budget_request(chosen[0], now, tenant, until)]
    out = [tenant_request(now, tenant, until)]
    for b in sorted(chosen, key=lambda b: b.id):
        scope_tenant = b.scope.get("tenant", "*")
        if b.period == "month" and b.unit == "usd" and (tenant is None or scope_tenant in ("*", tenant)):
            out.append(budget_request(b, now, tenant, until))
    return out


def _local_day(value: str, grain: str, zone: ZoneInfo) -> date:
    if grain == "day":
        return date.fromisoformat(value[:10])
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone).date()


def daily_by_member(request: SpendRequest, rows: Sequence[Row]) -> dict[tuple[str, str | None], dict[date, int]]:
    """``(tenant, member) → {local day: nano-USD}`` from the spend rows of one request (member None for tenants)."""
    zone = ZoneInfo(request.zone)
    out: dict[tuple[str, str | None], dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        day = _local_day(str(row[request.grain]), request.grain, zone)
        tenant = row.get("tenant")
        if tenant is None:
            continue
        member: str | None = None
        if request.budget is not None:
            member = request.budget.member_of({k: row.get(k) for k in request.budget.scope})
            if member is None:
                continue  # a row without the scoped dimension (an event with no user for a per-user budget)
        out[(str(tenant), member)][day] += int(row["cost_nanos"])
    return out


def projection_row(tenant: str, budget: Budget | None, member: str | None, p: Projection) -> Row:
    """One forecast row (JSON keys as :data:`COLUMNS`)."""
    limit = budget.limit if budget is not None else None
    return {
        "tenant": tenant,
        "budget_id": budget.id if budget is not None else None,
        "member": member,
        "month": p.month_start.isoformat()[:7],
        "basis": p.basis,
        "history_days": p.history_days,
        "month_to_date_nanos": p.month_to_date,
        "projected_nanos": p.projected,
        "low_nanos": p.low,
        "high_nanos": p.high,
        "limit_nanos": limit,
        "projected_share": p.projected / limit if limit else None,
        "projected_cross_date": p.cross_date.isoformat() if p.cross_date is not None else None,
    }


def forecast_rows(answers: Sequence[tuple[SpendRequest, Sequence[Row]]], now: datetime) -> list[Row]:
    """Every projection: tenants first (largest projection first), then budget members (nearest their limit first).

    A budget member is projected in the budget's timezone; a monthly budget with no spend this month or in the
    look-back still gets a row when its scope names a single member.
    """
    tenants: list[Row] = []
    members: list[Row] = []
    for request, rows in answers:
        zone = ZoneInfo(request.zone)
        local_now = now.astimezone(zone)
        series: Mapping[tuple[str, str | None], Mapping[date, int]] = daily_by_member(request, rows)
        b = request.budget
        if b is not None and not series and "*" not in b.scope.values():
            series = {(b.scope["tenant"], b.member_of(b.scope)): {}}
        for (tenant, member), daily in series.items():
            p = project(daily, local_now, b.limit if b is not None else None)
            (members if b is not None else tenants).append(projection_row(tenant, b, member, p))
    tenants.sort(key=lambda r: (-r["projected_nanos"], r["tenant"]))
    members.sort(key=lambda r: (-(r["projected_share"] or 0), r["budget_id"], r["member"] or ""))
    return tenants + members


def reading(rows: Sequence[Row]) -> str:
    """One line: how many budget members are projected over, and the first to cross."""
    over = [r for r in rows if r["projected_cross_date"] is not None]
    if not over:
        return "no monthly budget is projected to reach its limit this month"
    first = min(over, key=lambda r: (r["projected_cross_date"], r["budget_id"], r["member"]))
    return (
        f"{len(over)} budget member(s) projected to reach the limit; first: {first['budget_id']} "
        f"({first['member']}) on {first['projected_cross_date']}"
    )
