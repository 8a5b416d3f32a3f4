"""Step 1: decode and validate each record; dead-letter what is invalid, once, with its reason and origin.

Dead letters are flushed before the DLQ fence in Redis moves past their offsets: a crash in between re-sends them
once under the same ``dlq-id``, and a redelivery of a record already dead-lettered sends nothing again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from costplane.publisher.codec import DecodedMessage, Reject
from costplane.publisher.event import UsageEvent
from costplane.streams.dlq import dead_letters
from costplane.streams.pipeline.records import Outbox, Record
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.pipeline.validity import decode_record

if TYPE_CHECKING:
    from costplane.streams.app import Runtime
    from costplane.streams.worker.alerts import WorkerAlerts


@dataclass(slots=True)
class Decoded:
    """A batch after decoding: the valid events per record, and how many items were valid and invalid."""

    now_ms: int
    messages: list[tuple[Record, list[UsageEvent]]] = field(default_factory=list)
    valid: int = 0
    invalid: int = 0


class DecodeStep:
    """Records → valid events; rejects go to the DLQ topic (fenced in Redis so each is sent once)."""

    def __init__(self, rt: Runtime, redis: RedisCalls, outbox: Outbox, dlq_topic: str, alerts: WorkerAlerts) -> None:
        self.rt, self.redis, self.outbox, self.dlq_topic, self.alerts = rt, redis, outbox, dlq_topic, alerts

    async def __call__(self, batch: Sequence[Record]) -> Decoded:
        rt = self.rt
        out = Decoded(rt.now_ms())
        lettered: dict[int, int] = {}  # partition → last offset dead-lettered in this batch
        for n, record in enumerate(batch):
            if n and n % 20 == 0:
                await asyncio.sleep(0)  # keep the web server and heartbeats responsive under load
            decoded = decode_record(
                rt.codec, record.value, record.headers, record.timestamp_ms, rt.worker.max_clock_skew_ms
            )
            if decoded.rejects:
                out.invalid += len(decoded.rejects)
                if await self._dead_letter(record, decoded, out.now_ms):
                    lettered[record.partition] = record.offset
            if decoded.events:
                out.messages.append((record, decoded.events))
                out.valid += len(decoded.events)
        if lettered:  # flushed first, fenced second: a crash in between re-sends them once, same dlq-id
            await self.outbox.flush()
            await self.redis.until_answered(rt.dlq_fence.advance, lettered)
        return out

    async def _dead_letter(self, record: Record, decoded: DecodedMessage, now_ms: int) -> bool:
        """Send the record's rejects to the DLQ; False when an earlier delivery already did (the fence says so)."""
        m = self.rt.metrics
        if await self.redis.until_answered(self.rt.dlq_fence.done, record.partition, record.offset):
            m.dlq_redelivered.inc(len(decoded.rejects))  # dead-lettered before this redelivery
            return False
        for dl in dead_letters(
            decoded.rejects,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
        ):
            await self.outbox.send(self.dlq_topic, dl.key, dl.value, dl.headers)
        self._count(decoded.rejects)
        self.alerts.dead_lettered(decoded.rejects, record.key, record.partition, now_ms)
        return True

    def _count(self, rejects: list[Reject]) -> None:
        for rej in rejects:
            self.rt.metrics.dead_letters.labels(rej.reason).inc()
