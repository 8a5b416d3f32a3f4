"""Synchronous Redis calls of the stream role, off the event loop, in order, retried until Redis answers.

redis-py is synchronous; called from the event loop it would stall heartbeats, the web pages and every other
task for each round trip. All calls go to one worker thread, so they still run one after another in the order
they were made (a window commit never overtakes the count it belongs to). A call that fails with a Redis error is
retried with backoff: Redis down pauses the stream here instead of counting anything twice or not at all, says so
on ``/readyz`` and in ``costplane_worker_waiting``, and raises the fail-open alert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from costplane.enforcers.store import REDIS_ERRORS
from costplane.logging import get_logger

if TYPE_CHECKING:
    from costplane.streams.app import Runtime
    from costplane.streams.worker.alerts import WorkerAlerts

log = get_logger(__name__)
T = TypeVar("T")


class RedisCalls:
    """Runs Redis work on the stream role's one Redis thread."""

    def __init__(self, rt: Runtime, alerts: WorkerAlerts) -> None:
        self.rt, self.alerts = rt, alerts
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="costplane-redis")

    async def once(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the Redis thread, once: its errors are the caller's."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def until_answered(self, call: Callable[..., T], *args: Any, decisions: int = 0, commits: int = 0) -> T:
        """``call(*args)`` on the Redis thread until it does not fail with a Redis error (backoff 50 ms → 5 s).

        ``decisions``/``commits`` say what waits behind the call, for the fail-open alert."""
        delay = 0.05
        while True:
            try:
                result = await self.once(call, *args)
            except REDIS_ERRORS as exc:
                self._waiting(f"Redis: {exc}", decisions, commits, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._answered()
                return result

    def _waiting(self, what: str, decisions: int, commits: int, delay: float) -> None:
        rt = self.rt
        rt.waiting = what
        rt.metrics.waiting.labels("stream").set(1)
        rt.metrics.window_retries.inc()
        self.alerts.windows_failed(rt.now_ms(), decisions=decisions, commits=commits)
        log.warning("window_commit_failed", error=what.removeprefix("Redis: "), retry_in_s=delay)

    def _answered(self) -> None:
        if self.rt.waiting is not None:
            self.rt.waiting = None
            self.rt.metrics.waiting.labels("stream").set(0)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
