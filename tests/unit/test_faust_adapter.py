"""What the Faust adapter relies on in faust-streaming and aiokafka is still there.

The adapter (``streams/pipeline/faust_adapter.py``) is the one module that touches framework internals. These
checks read the installed packages themselves, so an upgrade that moves or renames what it reaches for fails here,
with the name of the attribute, instead of silently turning a setting off in production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import aiokafka
import faust
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from faust.streams import Stream
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import Message

from costplane.streams.pipeline.faust_adapter import record_of


def params(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_batches_come_from_take_events_with_a_size_and_a_time_limit() -> None:
    assert params(Stream.take_events)[:3] == ["self", "max_", "within"]


def test_a_faust_message_becomes_a_record_with_its_timestamp_in_milliseconds() -> None:
    # Faust's aiokafka driver converts the record's integer milliseconds to float seconds (record_of undoes it).
    assert "timestamp / 1000.0" in inspect.getsource(faust_aiokafka.Consumer._to_message)
    message = Message("t.usage", 3, 42, 1_767_225_600_123 / 1000.0, 0, [("h", b"v")], b"acme", b"body", None)
    record = record_of(message)
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        "t.usage",
        3,
        42,
        b"acme",
        b"body",
    )
    assert record.headers == [("h", b"v")] and record.timestamp_ms == 1_767_225_600_123
    assert record_of(Message("t", 0, 0, None, 0, None, None, None, None)).timestamp_ms is None  # type: ignore[arg-type]


def test_the_producer_takes_topic_key_value_partition_timestamp_headers_in_that_order() -> None:
    assert params(faust_aiokafka.Producer.send)[:7] == [
        "self",
        "topic",
        "key",
        "value",
        "partition",
        "timestamp",
        "headers",
    ]
    assert inspect.iscoroutinefunction(faust_aiokafka.Producer.flush)


def test_the_app_has_the_signals_timers_and_tasks_the_adapter_connects_to() -> None:
    app = faust.App("adapter-check", broker="kafka://127.0.0.1:1", store="memory://")
    for name in ("on_partitions_assigned", "on_partitions_revoked"):
        assert callable(getattr(app, name).connect), name
    for name in ("agent", "timer", "task", "topic"):
        assert callable(getattr(app, name)), name


def test_the_fetch_wait_is_where_set_fetch_max_wait_looks_for_it() -> None:
    """Faust consumer ``._thread`` → aiokafka consumer ``._consumer`` → ``._fetcher`` → ``._fetch_max_wait_ms``."""
    assert "self._thread = " in inspect.getsource(ThreadDelegateConsumer.__init__)
    assert "self._consumer = " in inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread.on_start)
    assert "self._fetcher = Fetcher(" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(Fetcher.__init__)


def test_the_budgets_consumer_can_refresh_metadata() -> None:
    assert "self._client = AIOKafkaClient(" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert params(AIOKafkaClient.force_metadata_update) == ["self"]
