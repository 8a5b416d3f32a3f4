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
    return [
        PricedEvent(
            UsageEvent(
                str(uuid.uuid4()),
                millis + i,
                "acme",
                "openai",
                "gpt-4o",
                f"r-{millis}-{i}",
                1,
                "ok",
                input_tokens=100,
                feature="chat",
            ),
            cost,
            "v1",
        )
        for i in range(n)
    ]


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


def test_reports_show_another_price_version_on_request(
    clickhouse_settings: ClickHouseSettings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored rating by default; ``--price-version`` re-prices each call at that version instead."""
    import json
    from decimal import ROUND_HALF_EVEN, Decimal

    from costplane.pricing.catalog import load_catalog

    def version(label: str, start: str, input_usd: str, output_usd: str) -> dict[str, Any]:
        return {
            "price_version": label,
            "effective_from": start,
            "models": {
                "gpt-4o": {"provider": "openai", "input_cost_per_token": input_usd, "output_cost_per_token": output_usd}
            },
        }

    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {
                "format": "costplane-price-catalog",
                "format_version": 1,
                "versions": [
                    version("A@2020", "2020-01-01", "0.0000025", "0.00001"),
                    version("B@2030", "2030-01-01", "0.000001", "0.000004"),
                ],
            }
        )
    )
    monkeypatch.setenv("COSTPLANE_PRICING_CATALOG", str(path))
    catalog = load_catalog(path)
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    at = int((now - DAY).timestamp() * 1000)
    events = [
        UsageEvent(
            str(uuid.uuid4()),
            at + i,
            "acme",
            "openai",
            "gpt-4o",
            f"r{i}",
            1,
            "ok",
            input_tokens=1_001 + i,
            output_tokens=333 + i,
        )
        for i in range(6)
    ]
    priced = [PricedEvent(e, catalog.price_event(e).cost_nanos, "A@2020") for e in events]
    sink = ClickHouseSink(BatchWriter(client, db), lambda offsets: None)
    for offset, pe in enumerate(priced):
        sink.add(pe, 0, offset)
    sink.flush()

    def at_b(e: UsageEvent) -> int:
        usd = e.input_tokens * Decimal("0.000001") + e.output_tokens * Decimal("0.000004")
        return int((usd * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    stored = run_report(client, ReportOptions.parse("spend", since="2d", now=now), db)
    assert stored.rows[0]["cost_nanos"] == sum(pe.cost_nanos for pe in priced) and stored.notes == []
    other = run_report(client, ReportOptions.parse("spend", since="2d", now=now, price_version="B@2030"), db)
    assert other.rows[0]["cost_nanos"] == sum(at_b(e) for e in events) != stored.rows[0]["cost_nanos"]
    assert other.source.startswith("raw") and "B@2030" in other.notes[0]
    with pytest.raises(ReportError, match="no price version"):
        run_report(client, ReportOptions.parse("spend", since="2d", now=now, price_version="C@1"), db)
