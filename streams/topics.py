"""The worker's topics, their partitions and configs, created idempotently with the Kafka admin client.

usage is keyed by tenant, so every window of a tenant lives on one partition (and one worker at a time);
usage.backfill carries imported history, which only the sink reads (never a live budget window);
budgets is compacted (latest definition per id, tombstones delete), and so is detectors (per-tenant detector
thresholds, key = tenant or ``*``); the DLQ keeps a bounded retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from costplane.config import KafkaSettings, WorkerSettings
from costplane.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(kafka: KafkaSettings, worker: WorkerSettings) -> list[TopicSpec]:
    """Every topic the control plane uses, with the settings' prefix and partition counts."""
    rf, parts = worker.replication_factor, worker.usage_partitions
    return [
        TopicSpec(kafka.topic("usage"), parts, rf),
        TopicSpec(kafka.topic("usage.backfill"), parts, rf),
        TopicSpec(
            kafka.topic("usage.dlq"), 1, rf, {"retention.ms": str(worker.dlq_retention_ms), "cleanup.policy": "delete"}
        ),
        TopicSpec(kafka.topic("budgets"), 1, rf, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        TopicSpec(kafka.topic("detectors"), 1, rf, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        TopicSpec(kafka.topic("decisions"), parts, rf),
        TopicSpec(kafka.topic("alerts"), 1, rf),
        TopicSpec(
            kafka.topic("alerts.dlq"), 1, rf, {"retention.ms": str(worker.dlq_retention_ms), "cleanup.policy": "delete"}
        ),
    ]


def create_topics(kafka: KafkaSettings, worker: WorkerSettings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns ``{topic: "created" | "exists"}``. Existing topics are left as they are."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka.confluent_config())
    specs = topic_specs(kafka, worker)
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config)
            for s in specs
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    result: dict[str, str] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            result[name] = "created"
        except KafkaException as exc:
            err: Any = exc.args[0] if exc.args else None
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                result[name] = "exists"
            else:
                raise
    log.info("topics_ready", **result)
    return result
