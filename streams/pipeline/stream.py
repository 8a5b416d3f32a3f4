"""The stream role's handling of one batch, in one function: the steps in order, nothing else.

Each step is a module of this package; its docstring says why it exists and what it guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from costplane.streams.pipeline.commit import CommitStep
from costplane.streams.pipeline.decode import DecodeStep
from costplane.streams.pipeline.dedup import drop_duplicates
from costplane.streams.pipeline.effects import Effects
from costplane.streams.pipeline.price import price
from costplane.streams.pipeline.records import Record
from costplane.streams.pipeline.windows import WindowsStep
from costplane.streams.worker.dedup import RecentIds
from costplane.streams.worker.metrics import WorkerMetrics


@dataclass
class StreamPipeline:
    """decode → dedup → price → windows → commit → effects, for every batch the consumer hands over."""

    budgets_loaded: asyncio.Event
    decode: DecodeStep
    recent: RecentIds
    catalog: Any
    windows: WindowsStep
    commit: CommitStep
    effects: Effects
    metrics: WorkerMetrics

    async def handle(self, batch: Sequence[Record]) -> None:
        await self.budgets_loaded.wait()  # every partition needs every budget
        decoded = await self.decode(batch)
        fresh = drop_duplicates(self.recent, decoded, self.metrics)
        located = price(self.catalog, fresh, self.metrics)
        if located:
            async with self.windows.lock:
                self.effects.committed(await self.commit(await self.windows(located)))
        self.effects.batch_done(decoded, located)
