"""Dead letters once per bad item: a fence per source partition, in Redis, beside the windows' fences.

A message is redelivered after a crash, a restart, a rebalance or the invalid-ratio stop (the worker exits before
its offsets are committed). Without a fence, each redelivery dead-letters its bad items again. The fence holds,
per source partition, the last offset whose dead letters were flushed to the DLQ; a redelivered message at or below
it is not dead-lettered again.

Order per batch: produce the dead letters, flush them, then advance the fence. A crash between the flush and the
fence write re-sends that batch's dead letters once more; they carry the same ``dlq-id`` header
(``<topic>:<partition>:<offset>:<index>``, the ``id`` of ``costplane dlq inspect --json``), so a reader recognises
them. Layout: ``{prefix}:worker:{group}:dlq`` hash, ``<partition>`` → offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Move a partition's fence forward only (two owners during a rebalance must never move it back).
_ADVANCE = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


class DlqFence:
    """Per-partition high-water marks of dead-lettered offsets (see the module docstring)."""

    def __init__(self, client: Any, prefix: str, group: str) -> None:
        self.client = client
        self.key = f"{prefix}:worker:{group}:dlq"
        self._marks: dict[int, int] | None = None

    def load(self) -> None:
        """Read the fences (again): at start and whenever partitions move between workers."""
        raw = self.client.hgetall(self.key)
        self._marks = {int(k): int(v) for k, v in raw.items()}

    def forget(self) -> None:
        """Partitions moved: read the fences from Redis before the next decision."""
        self._marks = None

    def done(self, partition: int, offset: int) -> bool:
        """True when this message's dead letters were flushed before (so a redelivery skips them)."""
        marks = self._marks
        if marks is None:
            self.load()
            marks = self._marks or {}
        return offset <= marks.get(partition, -1)

    def advance(self, marks: Mapping[int, int]) -> None:
        """Record flushed dead letters up to these offsets (call only after the DLQ producer flushed)."""
        if not marks:
            return
        args: list[int] = []
        for partition, offset in marks.items():
            args += [partition, offset]
        self.client.eval(_ADVANCE, 1, self.key, *args)
        if self._marks is not None:
            for partition, offset in marks.items():
                self._marks[partition] = max(offset, self._marks.get(partition, -1))
