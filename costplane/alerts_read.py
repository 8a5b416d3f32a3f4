"""Read the alerts of a time range back from the alerts topic (the record of truth), for the HTML report.

Reads every partition from its start to the end it had when the read began, without joining a consumer group,
and keeps the alerts whose ``occurred_at`` falls in ``[since, until)``. Best effort with a deadline: a report is
still worth writing when Kafka cannot be reached, so the caller gets ``None`` rather than an error then.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any


def alerts_in_range(
    kafka: Any, since: datetime, until: datetime | None, tenant: str | None, timeout_s: float = 15.0
) -> list[dict[str, Any]] | None:
    """The alerts (as the webhook's JSON objects) in the range, oldest first; None when the topic cannot be read."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    from costplane.streams.alerting.codec import AlertDecodeError, decode_alert
    from costplane.streams.alerting.model import alert_to_json_dict

    topic = kafka.topic("alerts")
    low = int(since.timestamp() * 1000)
    high = int(until.timestamp() * 1000) if until is not None else None
    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": "costplane-report-alerts",
            "enable.auto.commit": False,
            "socket.timeout.ms": 5000,
        }
    )
    out: list[dict[str, Any]] = []
    try:
        info = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if info is None or info.error is not None:
            return []
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in tps}
        done = {p for p, end in ends.items() if end == 0}
        consumer.assign(tps)
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None:
                    continue
                part, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                if offset + 1 >= ends[part]:
                    done.add(part)
                try:
                    event = decode_alert(msg.value(), msg.headers())
                except AlertDecodeError:
                    continue
                if (
                    low <= event.occurred_at_ms
                    and (high is None or event.occurred_at_ms < high)
                    and tenant in (None, event.tenant)
                ):
                    out.append(alert_to_json_dict(event))
    except KafkaException:
        return None
    finally:
        consumer.close()
    return sorted(out, key=lambda a: int(a["occurred_at"]))
