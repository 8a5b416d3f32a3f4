"""Step 4: count a batch into its spend windows: the writes and decisions the commit step will make.

Windows not cached yet (tenant fences and states) are read from Redis first, on the Redis thread; tenants without a
decision have their commit sent already (``send_early``). The lock keeps one batch or one re-evaluation between
count and commit at a time: a timer's re-check must not write a state computed before a batch whose commit is
already on its way, nor the other way round.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from costplane.budgets import Budget
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.worker.gctuning import collections_deferred
from costplane.streams.worker.windows import Located, Pending

if TYPE_CHECKING:
    from costplane.streams.app import Runtime


class WindowsStep:
    """Located events → :class:`Pending` window writes, computed against what Redis holds."""

    def __init__(self, rt: Runtime, redis: RedisCalls) -> None:
        self.rt, self.redis = rt, redis
        self.lock = asyncio.Lock()

    async def __call__(self, located: list[Located]) -> Pending:
        budgets = list(self.rt.budgets.values())  # read on the event loop, where budgets change
        pending = await self.redis.until_answered(self._count, located, budgets)
        self.rt.metrics.duplicates.inc(pending.redelivered)
        return pending

    def _count(self, located: list[Located], budgets: list[Budget]) -> Pending:
        """On the Redis thread; the time is read at each attempt (a retry after an outage counts at its own now)."""
        with collections_deferred():  # the whole batch is alive until count returns: nothing to collect
            return self.rt.windows.count(located, budgets, self.rt.now_ms(), send_early=True)
