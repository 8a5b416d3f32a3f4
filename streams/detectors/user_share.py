"""user_share: one user spent more than ``user_share`` of the tenant's daily budget today.

Per-user day totals are kept only for tenants with a tenant-wide daily budget (scope exactly the tenant; the
smallest if several), bounded to the biggest ``user_share_users`` spenders, and dropped when that day ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from costplane.budgets import Budget, WindowCache
from costplane.streams.core.findings import Contributor, Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Unsaved, Verdict, finding, ratio, tokens_of, usd
from costplane.streams.detectors.config import DetectorConfig

ACTION = (
    "Check the user's traffic for abuse or a stuck client; give users a per-user budget "
    "(costplane budget set … --scope tenant=T,user=*)."
)


@dataclass(slots=True)
class UserDay:
    window_start: int
    window_end: int
    budget: Budget
    threshold: Fraction  # the spend above which a user is reported
    users: dict[str, list[int]] = field(default_factory=dict)  # user -> [nanos, tokens]
    over: set[str] = field(default_factory=set)
    #: The most a user dropped from ``users`` had, [nanos, tokens]; a newcomer starts there (see shrink).
    floor: list[int] = field(default_factory=lambda: [0, 0])

    def shrink(self, keep: int) -> None:
        """Keep the ``keep`` biggest spenders (and every user already over the share); forget the rest.

        Why: a tenant with a million users a day would otherwise hold a million entries until midnight. Only users
        near the share matter. As in :meth:`SubjectMinute.shrink` (Space-Saving), a user (re)entering starts at
        ``floor``, the most any dropped user had: a figure held is at least the user's true spend and over it by
        at most ``floor`` — which grows about as the day's spend divided by ``keep``, so a sliver of the share
        while that spend stays well below ``keep`` × share × the limit — and no user who crosses the share can be
        missed, however often it was dropped before.
        """
        idx = 0 if self.budget.unit == "usd" else 1
        ranked = sorted(self.users.items(), key=lambda item: item[1][idx], reverse=True)
        floor = self.floor
        for user, cell in ranked[keep:]:
            if user not in self.over:
                del self.users[user]
                floor[0], floor[1] = max(floor[0], cell[0]), max(floor[1], cell[1])


def tenant_daily_budgets(budgets: Iterable[Budget]) -> dict[str, Budget]:
    """The tenant-wide daily budget of each tenant (scope = exactly the tenant; the smallest if several)."""
    out: dict[str, Budget] = {}
    for b in budgets:
        tenant = b.scope.get("tenant", "*")
        if b.period != "day" or set(b.scope) != {"tenant"} or tenant == "*":
            continue
        if tenant not in out or (b.unit, b.limit) < (out[tenant].unit, out[tenant].limit):
            out[tenant] = b
    return out


class UserShare(Unsaved):
    """Today's spend per user of each tenant that has a tenant-wide daily budget."""

    counts_events = True

    def __init__(self, windows: WindowCache) -> None:
        self.windows = windows
        self.daily: dict[str, Budget] = {}
        self.days: dict[str, UserDay] = {}

    def set_budgets(self, budgets: Iterable[Budget]) -> None:
        """A day counted against a budget that changed or went away is dropped (its threshold was that budget's)."""
        self.daily = tenant_daily_budgets(budgets)
        for tenant in [t for t, d in self.days.items() if self.daily.get(t) != d.budget]:
            del self.days[tenant]

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        e = event.event
        budget = self.daily.get(e.tenant)
        if budget is None or e.user_id is None:
            return
        day = self.days.get(e.tenant)
        if day is None or not day.window_start <= e.occurred_at < day.window_end or day.budget is not budget:
            w = self.windows.window("day", budget.tz, e.occurred_at)
            if day is not None and w.start_ms < day.window_start:
                return  # a late event of a day already over: that day's shares are no longer reported
            day = UserDay(w.start_ms, w.end_ms, budget, Fraction(config.user_share) * budget.limit)
            self.days[e.tenant] = day
        cell = day.users.get(e.user_id)
        if cell is None:
            if len(day.users) >= 2 * config.user_share_users:
                day.shrink(config.user_share_users)  # before the newcomer joins (it starts at the floor)
            cell = day.users[e.user_id] = day.floor[:]
        cell[0] += event.cost_nanos
        cell[1] += tokens_of(event)
        if (cell[0] if budget.unit == "usd" else cell[1]) > day.threshold:
            day.over.add(e.user_id)

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        for tenant, day in self.days.items():
            if minute >= day.window_end:
                continue  # the day is over; its users clear through the reporting of recent keys
            cfg = context.config_for(tenant)
            for user in sorted(day.over):
                out.append(
                    finding(
                        "user_share",
                        tenant,
                        {"user_id": user},
                        day.window_start,
                        day.window_end,
                        _verdict(day, user, cfg),
                    )
                )
        for tenant in [t for t, d in self.days.items() if d.window_end + MINUTE_MS * 60 < minute]:
            del self.days[tenant]
        return out

    def forget(self, tenant: str) -> None:
        self.days.pop(tenant, None)

    def tracked(self) -> dict[str, int]:
        return {"user_days": sum(len(d.users) for d in self.days.values())}


def _verdict(day: UserDay, user: str, cfg: DetectorConfig) -> Verdict:
    b = day.budget
    nanos, tokens = day.users[user]
    spent = nanos if b.unit == "usd" else tokens
    return Verdict(
        True,
        "warning",
        f"user {user} used {ratio(spent * 100, b.limit)} % of the tenant's daily budget {b.id}",
        {
            "spent": str(spent),
            "unit": b.unit,
            "limit": str(b.limit),
            "share": ratio(spent, b.limit),
            "threshold": str(cfg.user_share),
            "budget_id": b.id,
            "cost_usd": usd(nanos),
            "tokens": str(tokens),
            **({"overstated_by_at_most": str(day.floor[0 if b.unit == "usd" else 1])} if any(day.floor) else {}),
        },
        (Contributor("user_id", user, nanos, tokens),),
        ACTION,
    )
