"""Step 5: decision records first (flushed: at least once), then the windows' atomic commit (exactly once).

A crash between the two republishes the records on redelivery under the same ``dedup_key``; the windows count once
either way, because the commit carries the offset fence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from costplane.streams.pipeline.records import Outbox
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.worker.windows import CommitReport, Pending

if TYPE_CHECKING:
    from costplane.streams.app import Runtime


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit did: the decision records sent (JSON, in order) and Redis's report of the window commit."""

    pending: Pending
    records: list[str]
    report: CommitReport


class CommitStep:
    """Pending window writes → decision records on the decisions topic, then the fenced commit in Redis."""

    def __init__(self, rt: Runtime, redis: RedisCalls, outbox: Outbox, decisions_topic: str) -> None:
        self.rt, self.redis, self.outbox, self.decisions_topic = rt, redis, outbox, decisions_topic

    async def __call__(self, pending: Pending) -> Committed:
        records = [d.to_json() for d in pending.decisions]
        for decision, record in zip(pending.decisions, records, strict=True):
            await self.outbox.send(self.decisions_topic, decision.tenant.encode(), record.encode())
        if records:
            await self.outbox.flush()
        report = await self.redis.until_answered(
            self.rt.windows.commit, pending, decisions=len(pending.decisions), commits=len(pending.commits)
        )
        return Committed(pending, records, report)
