"""History outlives the raw TTL: reports that read rollups answer whole; reports that need raw events say which
part of the range they could not answer instead of printing partial numbers as if whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from costplane.config import ClickHouseSettings
from costplane.publisher.event import UsageEvent
from costplane.reports.errors import ReportError
from costplane.reports.options import ReportOptions
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.query import run_report
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

DAY = timedelta(days=1)


def _events(at: datetime, n: int, cost: int) -> list[PricedEvent]:
    millis = int(at.timestamp() * 1000)
    return [PricedEvent(UsageEvent(str(uuid.uuid4()), millis + i, "acme", "openai", "gpt-4o", f"r-{millis}-{i}", 1,
                                   "ok", input_tokens=100, feature="chat"), cost, "v1") for i in range(n)]


def _load(client: Any, database: str, events: list[PricedEvent], ingested: datetime) -> None:
    sink = ClickHouseSink(BatchWriter(client, database, clock=lambda: ingested), lambda offsets: None)
    for offset, pe in enumerate(events):
        sink.add(pe, 0, offset)
    sink.flush()


def test_rollup_reports_answer_past_the_raw_ttl_and_raw_reports_say_what_expired(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db, raw_ttl_days=30)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old, recent = _events(now - 40 * DAY, 7, 1_000), _events(now - 2 * DAY, 5, 300)
    _load(client, db, old, ingested=now - 40 * DAY)
    _load(client, db, recent, ingested=now - 2 * DAY)
    client.command(f"OPTIMIZE TABLE {db}.usage_events FINAL")  # applies the TTL now
    assert client.query(f"SELECT count() FROM {db}.usage_events").result_rows[0][0] == len(recent)

    spend = run_report(client, ReportOptions.parse("spend", since="45d", now=now), db, raw_ttl_days=30)
    assert [(r["tenant"], r["attempts"], r["cost_nanos"]) for r in spend.rows] == [("acme", 12, 7 * 1_000 + 5 * 300)]
    assert spend.notes == [] and spend.source.startswith("rollup")

    requests = run_report(client, ReportOptions.parse("requests", since="45d", now=now), db, raw_ttl_days=30)
    assert [(r["feature"], r["requests"]) for r in requests.rows] == [("chat", len(recent))]
    assert requests.notes and "expired" in requests.notes[0] and "raw TTL 30 days" in requests.notes[0]
    with pytest.raises(ReportError, match="expired"):
        run_report(client, ReportOptions.parse("requests", since="45d", until="35d", now=now), db, raw_ttl_days=30)
