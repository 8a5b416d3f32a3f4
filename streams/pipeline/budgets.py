"""Budgets follow the compacted budgets topic: read in full at start, then every change, applied as it comes.

Every worker reads every budget, because every partition needs every budget. Once the topic is read to its end the
stream role is ready and every standing decision is re-checked; afterwards each change re-checks the decisions of
the budgets it touched. Tenant-named budgets are also published to Redis, where the in-app guard matches calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from costplane.budgets import Budget
from costplane.logging import get_logger
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.pipeline.reevaluate import Reevaluation

if TYPE_CHECKING:
    from costplane.streams.app import Runtime
    from costplane.streams.worker.alerts import WorkerAlerts

log = get_logger(__name__)

#: One record of the budgets topic: the budget id (key) and its JSON, None for a deletion (tombstone).
BudgetRecord = tuple[bytes | None, bytes | None]


class BudgetSource(Protocol):
    """The budgets topic, read from its beginning (the Faust adapter provides it over aiokafka)."""

    async def start(self) -> None: ...

    async def records(self) -> list[BudgetRecord]: ...

    async def caught_up(self) -> bool: ...

    async def stop(self) -> None: ...


def apply_changes(budgets: dict[str, Budget], records: Iterable[BudgetRecord]) -> set[str]:
    """Apply budget records to ``budgets`` in order; the ids changed. An invalid budget is logged and skipped."""
    changed: set[str] = set()
    for key, value in records:
        budget_id = (key or b"").decode()
        if value is None:
            budgets.pop(budget_id, None)
        else:
            try:
                budgets[budget_id] = Budget.from_json(value)
            except ValueError as exc:
                log.error("budget_invalid", budget_id=budget_id, error=str(exc))
                continue
        changed.add(budget_id)
    return changed


def by_tenant(budgets: Iterable[Budget]) -> dict[str, list[Budget]]:
    """Tenant-named budgets grouped by tenant: what the in-app guard reads from Redis."""
    out: dict[str, list[Budget]] = {}
    for b in budgets:
        tenant = b.scope.get("tenant", "*")
        if tenant != "*":
            out.setdefault(tenant, []).append(b)
    return out


class BudgetFollower:
    """Keeps ``rt.budgets`` equal to the budgets topic and reacts to each change."""

    def __init__(self, rt: Runtime, redis: RedisCalls, alerts: WorkerAlerts, reevaluation: Reevaluation) -> None:
        self.rt, self.redis, self.alerts, self.reevaluation = rt, redis, alerts, reevaluation

    async def follow(self, source: BudgetSource) -> None:
        """Read ``source`` forever (until cancelled)."""
        await source.start()
        try:
            while True:
                await self.step(source)
        finally:
            await source.stop()

    async def step(self, source: BudgetSource) -> None:
        changed = apply_changes(self.rt.budgets, await source.records())
        if changed:
            await self.redis.once(self.publish, by_tenant(self.rt.budgets.values()))
            self.alerts.set_budgets(self.rt.budgets.values())
        if not self.rt.budgets_loaded.is_set():
            if await source.caught_up():
                self.rt.budgets_loaded.set()
                self.rt.ready = True
                log.info("budgets_loaded", count=len(self.rt.budgets))
                await self.reevaluation.everything()
        elif changed:
            await self.reevaluation.budgets(changed)

    def publish(self, tenants: dict[str, list[Budget]]) -> None:
        """Each tenant's budget set to Redis (an empty set for a tenant whose last budget was deleted).

        Redis down is not fatal here: the guard keeps its cached set, and the failure counts as a fail-open."""
        rt = self.rt
        try:
            for tenant in rt.published_tenants - tenants.keys():
                rt.store.publish_budgets(tenant, [])
            for tenant, items in tenants.items():
                rt.store.publish_budgets(tenant, items)
            rt.published_tenants = set(tenants)
        except Exception as exc:  # noqa: BLE001 - Redis down: the guard keeps its cached set; counted as fail-open
            rt.metrics.fail_opens.inc()
            log.warning("publish_budgets_failed", error=str(exc))
