"""Standing decisions checked again outside of batches: on the rollover timer, on a budget change, on takeover.

A decision is lifted when its window ends (Redis expires it too; the lift record says so), when its budget is
raised or deleted, and a worker taking partitions over re-checks their tenants' standing decisions against the
budgets in force (a budget changed while no worker held them is applied now). Each re-check takes the windows'
lock, so it never interleaves with a batch between count and commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costplane.budgets import Budget
from costplane.logging import get_logger
from costplane.streams.pipeline.commit import CommitStep
from costplane.streams.pipeline.effects import Effects
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.pipeline.windows import WindowsStep
from costplane.streams.worker.windows import Pending

if TYPE_CHECKING:
    from costplane.streams.app import Runtime

log = get_logger(__name__)


class Reevaluation:
    """Re-checks of standing decisions, each committed and observed like a batch."""

    def __init__(self, rt: Runtime, redis: RedisCalls, windows: WindowsStep, commit: CommitStep, effects: Effects):
        self.rt, self.redis, self.windows, self.commit, self.effects = rt, redis, windows, commit, effects

    async def budgets(self, budget_ids: set[str] | None) -> None:
        """Re-check the decisions of ``budget_ids`` (None: every standing decision whose window may have ended)."""
        async with self.windows.lock:
            pending = await self.redis.until_answered(self._reevaluate, dict(self.rt.budgets), budget_ids)
            self.effects.committed(await self.commit(pending))

    def _reevaluate(self, budgets: dict[str, Budget], budget_ids: set[str] | None) -> Pending:
        """On the Redis thread; the time is read at each attempt, like a batch's count."""
        return self.rt.windows.reevaluate(budgets, budget_ids, self.rt.now_ms())

    async def everything(self) -> None:
        """Every budget in force and every budget a standing decision names."""
        standing = await self.redis.until_answered(self.rt.windows.standing_budgets)
        await self.budgets(set(self.rt.budgets) | standing)

    async def rollover(self) -> None:
        """The timer's tick: lift decisions whose window ended (once budgets are loaded)."""
        if self.rt.budgets_loaded.is_set():
            await self.budgets(None)

    async def take_over(self, partitions: set[int]) -> None:
        """Load the metas of the tenants on ``partitions``, then re-check their standing decisions."""
        async with self.windows.lock:  # never between a batch's count and its commit
            loaded = await self.redis.until_answered(self.rt.windows.take_over, partitions)
        log.info("windows_taken_over", partitions=sorted(partitions), tenants=loaded)
        if self.rt.budgets_loaded.is_set():
            await self.everything()

    async def revoked(self, partitions: set[int]) -> None:
        """Partitions may move: fences and cached windows are read from Redis again on next use."""
        async with self.windows.lock:  # a batch's commit finishes against the state it counted on
            await self.redis.once(self._forget)
        for partition in partitions:  # on the event loop, where the recent ids are read
            self.rt.recent.forget(partition)

    def _forget(self) -> None:
        """On the Redis thread, where the window cache and the DLQ fence are used."""
        self.rt.windows.forget_all()
        self.rt.dlq_fence.forget()
