"""The stream worker follows the compacted detectors topic: per-tenant thresholds, changed without a restart.

Read from the start and then forever, like the budgets topic: the latest record per key wins and a tombstone
removes it. After each batch the whole set is resolved (:func:`costplane.streams.detectors.overrides.resolve`) and
handed to the detectors, so a change to the ``*`` default reaches every tenant without its own record. A record
that does not parse or does not validate is logged with its reason and not applied (that tenant keeps the
default); the topic itself is never blocked by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from costplane.config import KafkaSettings
from costplane.logging import get_logger
from costplane.streams.detectors.overrides import Overrides, Resolved, decode_record, resolve

log = get_logger(__name__)

TOPIC = "detectors"


class DetectorSettings:
    """The records read so far; pure (the follower below feeds it from Kafka)."""

    def __init__(self) -> None:
        self.records: dict[str, Overrides] = {}
        self.invalid: dict[str, str] = {}  # key -> why its latest value could not be read

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> bool:
        """Take a batch of (key, value) records; True when anything changed."""
        changed = False
        for raw_key, value in records:
            key = (raw_key or b"").decode("utf-8", errors="replace")
            changed = True
            if value is None:
                self.records.pop(key, None)
                self.invalid.pop(key, None)
                continue
            try:
                self.records[key] = decode_record(key, value)
                self.invalid.pop(key, None)
            except ValueError as exc:
                self.records.pop(key, None)  # the latest value is what the operator meant: not the one before it
                self.invalid[key] = str(exc)
                log.error("detector_settings_invalid", key=key[:200], error=str(exc)[:300])
        return changed

    def resolved(self) -> Resolved:
        out = resolve(self.records)
        for key, error in out.errors.items():
            log.error("detector_settings_invalid", key=key[:200], error=error[:300])
        return out


async def follow_detector_settings(kafka: KafkaSettings, apply: Callable[[Resolved], None]) -> None:
    """Read the compacted detectors topic from the start, forever; call ``apply`` with the thresholds in force
    after each batch that changed them."""
    from costplane.streams.pipeline.faust_adapter import assign_from_start, compacted_consumer

    topic = kafka.topic(TOPIC)
    consumer = compacted_consumer(kafka.bootstrap_servers)
    settings = DetectorSettings()
    await consumer.start()
    try:
        await assign_from_start(consumer, topic)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            records = [(rec.key, rec.value) for recs in batch.values() for rec in recs]
            if records and settings.apply(records):
                resolved = settings.resolved()
                apply(resolved)
                log.info("detector_settings_applied", tenants=len(resolved.tenants), invalid=len(resolved.errors))
    finally:
        await consumer.stop()
