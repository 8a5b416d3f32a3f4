"""Reading a compacted topic (budgets, detectors) whole: every partition from its first offset, no consumer group.

Why no group: every worker needs every record (the latest value per key is the configuration in force), and a
group would split the partitions between workers and remember offsets nobody wants to resume from.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def assign_from_start(consumer: Any, topic: str) -> list[Any]:
    """Wait until ``topic`` exists (metadata refreshed every 0.5 s), assign all its partitions to a started
    aiokafka ``consumer`` and seek to their beginning; returns the partitions."""
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    while not parts:
        await asyncio.sleep(0.5)
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps
