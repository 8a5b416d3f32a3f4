"""Every SQL query in docs/runbook.md runs against the real usage_events table (migrated, with recent rows)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from costplane.config import ClickHouseSettings
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
QUERIES = re.findall(r"```sql\n(.*?)```", RUNBOOK.read_text(), flags=re.S)


def _recent_events(now_ms: int) -> list[PricedEvent]:
    out = []
    for i in range(120):
        event = UsageEvent(
            event_id=f"ev-{i}",
            occurred_at=now_ms - (i % 90) * 60_000 - 1,
            tenant="acme",
            provider="openai",
            model=("gpt-4o", "gpt-4o-mini", "mystery-model")[i % 3],
            request_id=f"req-{i // 3}",
            attempt=1 + i % 3,
            status=("ok", "rate_limited", "timeout")[i % 3],
            input_tokens=1000 + i,
            cached_input_tokens=i * 3,
            cache_write_tokens=i % 7,
            output_tokens=200 + i,
            reasoning_tokens=i % 11,
            feature=("chat", "search")[i % 2],
            team=("search", None)[i % 2],
            user_id=f"u-{i % 5}",
            session_id=f"s-{i % 4}",
            turn=i // 4,
            system_prompt_tokens=500,
            plan="pro",
        )
        out.append(PricedEvent(event, 0 if i % 3 == 2 else 1_000_000 + i * 12_345, "v1", unpriced=i % 3 == 2))
    return out


def test_runbook_has_queries() -> None:
    assert len(QUERIES) >= 12


def test_every_runbook_query_runs_and_the_retry_storm_one_sees_the_retries(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = open_client(clickhouse_settings)
    migrate(client, clickhouse_settings.database)
    sink = ClickHouseSink(BatchWriter(client, clickhouse_settings.database), lambda offsets: None)
    for offset, pe in enumerate(_recent_events(time.time_ns() // 1_000_000)):
        sink.add(pe, 0, offset)
    sink.flush()
    results = []
    for sql in QUERIES:
        query = sql.replace("costplane.usage_events", f"{clickhouse_settings.database}.usage_events")
        results.append(client.query(query.strip().rstrip(";")))
    retry = results[0]
    assert retry.result_rows, "the retry-storm query found no retries in a table full of them"
    columns = retry.column_names
    assert {"retry_ratio", "wasted_usd", "statuses"} <= set(columns)
    unpriced = next(r for sql, r in zip(QUERIES, results, strict=True) if "AND unpriced" in sql)
    assert [row[1] for row in unpriced.result_rows] == ["mystery-model"]
