"""Dead letters: what a rejected message or event looks like on ``<prefix>.usage.dlq``, and how to read it back.

A message that did not decode at all is dead-lettered as its original bytes (with its original headers), so a
fixed consumer can re-read it exactly. One invalid event out of an otherwise good batch is dead-lettered alone, as
JSON (``content-type: application/json``), so a person can read and fix it. Either way the DLQ headers say where
it came from and why: ``dlq-topic``, ``dlq-partition``, ``dlq-offset``, ``dlq-error-class``, ``dlq-reason``,
``dlq-message``, and ``dlq-id`` (``<topic>:<partition>:<offset>:<index>``): the same bad item always gets the
same id, so a record written twice (a crash between flushing it and the worker's DLQ fence) is recognisable.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from costplane.publisher.codec import Headers, Reject

H_TOPIC = "dlq-topic"
H_PARTITION = "dlq-partition"
H_OFFSET = "dlq-offset"
H_ERROR_CLASS = "dlq-error-class"
H_REASON = "dlq-reason"
H_MESSAGE = "dlq-message"
H_ID = "dlq-id"
H_CONTENT_TYPE = "content-type"
JSON_EVENT = b"application/json; costplane=UsageEvent"

#: Reasons that mean the bytes themselves could not be read (versus a readable but invalid event).
MESSAGE_LEVEL = frozenset({"undecodable", "unknown_schema", "empty_batch"})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record to produce on the DLQ."""

    key: bytes | None
    value: bytes
    headers: Headers


def error_class(reason: str) -> str:
    """Coarse class of a reject reason: ``decode`` (bytes unreadable) or ``validation`` (an invalid event)."""
    return "decode" if reason in MESSAGE_LEVEL or reason == "schema_mismatch" else "validation"


def dead_letters(
    reject_list: list[Reject],
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
) -> list[DeadLetter]:
    """The DLQ records for the rejects of one message (one per reject; the whole message when it did not decode)."""
    out: list[DeadLetter] = []
    for index, rej in enumerate(reject_list):
        meta: Headers = [
            (H_TOPIC, topic.encode()),
            (H_PARTITION, str(partition).encode()),
            (H_OFFSET, str(offset).encode()),
            (H_ERROR_CLASS, error_class(rej.reason).encode()),
            (H_REASON, rej.reason.encode()),
            (H_MESSAGE, rej.message[:1000].encode()),
            (H_ID, f"{topic}:{partition}:{offset}:{index}".encode()),
        ]
        if rej.event is not None:
            body = json.dumps(rej.event, sort_keys=True, default=str).encode()
            out.append(DeadLetter(key, body, [*meta, (H_CONTENT_TYPE, JSON_EVENT)]))
        else:
            original = [(k, v) for k, v in (headers or []) if not k.startswith("dlq-")]
            out.append(DeadLetter(key, value or b"", [*meta, *original]))
    return out


def describe(
    key: bytes | None, value: bytes | None, headers: Headers | None, partition: int, offset: int
) -> dict[str, Any]:
    """A DLQ record as a JSON-able dict (``costplane dlq inspect``): where from, why, and the payload."""
    h = {k: v for k, v in (headers or [])}

    def text(name: str) -> str | None:
        raw = h.get(name)
        return raw.decode(errors="replace") if raw is not None else None

    payload: Any
    if h.get(H_CONTENT_TYPE) == JSON_EVENT:
        try:
            payload = json.loads(value or b"")
        except ValueError:
            payload = None
    else:
        payload = {"base64": base64.b64encode(value or b"").decode(), "bytes": len(value or b"")}
    return {
        "dlq_partition": partition,
        "dlq_offset": offset,
        "topic": text(H_TOPIC),
        "partition": int(text(H_PARTITION) or -1),
        "offset": int(text(H_OFFSET) or -1),
        "error_class": text(H_ERROR_CLASS),
        "reason": text(H_REASON),
        "message": text(H_MESSAGE),
        "key": key.decode(errors="replace") if key else None,
        "payload": payload,
        "id": text(H_ID),
    }


class InvalidRatioExceeded(RuntimeError):
    """The share of invalid events passed the configured limit: most likely a bad deploy upstream."""


class InvalidRatioGuard:
    """Invalid / total events over a sliding time window; ``observe`` raises once the limit is passed.

    Kept in one-second buckets so memory is bounded by the window length, not the traffic.
    """

    def __init__(self, limit: float, window_s: float, min_events: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.min_events = min_events
        self._buckets: deque[list[int]] = deque()  # [second, valid, invalid]
        self._valid = 0
        self._invalid = 0

    @property
    def ratio(self) -> float:
        total = self._valid + self._invalid
        return self._invalid / total if total else 0.0

    def observe(self, valid: int, invalid: int, now_s: float) -> None:
        second = int(now_s)
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            _, v, i = self._buckets.popleft()
            self._valid -= v
            self._invalid -= i
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += valid
            self._buckets[-1][2] += invalid
        else:
            self._buckets.append([second, valid, invalid])
        self._valid += valid
        self._invalid += invalid
        total = self._valid + self._invalid
        if total >= self.min_events and self.ratio > self.limit:
            raise InvalidRatioExceeded(
                f"stopping: {self._invalid} of {total} events ({self.ratio:.1%}) in the last {self.window_s:g} s "
                f"were invalid, above COSTPLANE_WORKER_INVALID_RATIO_LIMIT={self.limit:g}; the rejected records "
                f"are on the dead-letter topic (costplane dlq inspect). Fix the producer, or raise the limit."
            )
