"""``costplane report html`` opened in headless Chromium with the network off: every chart draws, the numbers in
the page are the JSON report's, and a screenshot is kept (tests/artifacts/, not committed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from typer.testing import CliRunner

from costplane.budgets import Budget, window_for
from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.enforcers import RedisBudgetStore
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.streams.alerting.codec import encode_alert
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter
from costplane.streams.topics import create_topics

pytestmark = [pytest.mark.clickhouse, pytest.mark.redis, pytest.mark.kafka, pytest.mark.slow]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _events() -> list[PricedEvent]:
    out = []
    for i in range(120):
        out.append(
            PricedEvent(
                UsageEvent(
                    event_id=f"html-{i}",
                    occurred_at=T0 + (i % 6) * HOUR + i,
                    tenant=("acme", "globex")[i % 2],
                    provider="openai",
                    model=("gpt-4o", "gpt-4o-mini")[i // 2 % 2],
                    request_id=f"r{i // 3}",
                    attempt=1 + i % 3,
                    status="ok" if i % 3 == 2 else "error",
                    input_tokens=100 + i,
                    cached_input_tokens=(i % 4) * 10,
                    output_tokens=2 * i,
                    user_id=f"u{i % 5}",
                    feature=("chat", "search")[i % 2],
                    session_id=f"s{i % 4}",
                    turn=1 + i % 6,
                ),
                1_000_003 * (i + 1),
                "v1",
            )
        )
    return out


class _Page(HTMLParser):
    """The rendered DOM's tables (section → rows of column → data-value) and chart contents."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.charts: dict[str, int] = {}  # chart id → drawn SVG shapes inside it
        self._chart: str | None = None
        self._depth = 0
        self._row: dict[str, Any] | None = None
        self.external: list[str] = []  # elements that would fetch something from elsewhere
        self._groups: list[bool] = []  # open <g> elements: is each a Plotly trace?

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "data", "srcset", "action"):
            if re.match(r"\s*(https?:)?//", a.get(name) or ""):
                self.external.append(f"<{tag} {name}={a[name]}>")
        if tag == "link" or tag == "script" and a.get("src"):
            self.external.append(f"<{tag} {a}>")
        if tag == "section" and a.get("data-section"):
            self.section = a["data-section"]
            self.tables[str(self.section)] = []
        if tag == "div" and (a.get("id") or "").startswith("chart-"):
            self._chart, self._depth = str(a["id"]), 0
            self.charts[self._chart] = 0
        elif self._chart is not None and tag == "div":
            self._depth += 1
        if tag == "g":
            self._groups.append("trace" in (a.get("class") or "").split())
        if self._chart is not None and tag == "path" and a.get("d") and any(self._groups):
            self.charts[self._chart] += 1  # a bar, a marker or a line of a trace: drawn only from data
        if tag == "tr" and self.section is not None:
            self._row = {}
        if tag == "td" and self._row is not None and a.get("data-col"):
            self._row[str(a["data-col"])] = json.loads(str(a["data-value"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._groups:
            self._groups.pop()
        if tag == "div" and self._chart is not None:
            if self._depth == 0:
                self._chart = None
            else:
                self._depth -= 1
        if tag == "tr" and self._row is not None and self.section is not None:
            if self._row:
                self.tables[self.section].append(self._row)
            self._row = None


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is a test prerequisite (scripts/install-prereqs installs it)"
    return path


def _offline(*args: str) -> list[str]:
    """Chromium with every host name unresolvable and a dead proxy: nothing can leave the machine."""
    return [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--virtual-time-budget=10000",
        *args,
    ]


def _alert(n: int, occurred_at_ms: int) -> AlertEvent:
    return AlertEvent(
        alert_id=f"a{n}",
        dedup_key=f"retry_storm|tenant=acme|n={n}",
        kind="retry_storm",
        action="trigger",
        severity="critical",
        tenant="acme",
        summary=f"storm {n}",
        window_start_ms=occurred_at_ms - 60_000,
        window_end_ms=occurred_at_ms,
        occurred_at_ms=occurred_at_ms,
    )


def _publish_alerts(kafka: KafkaSettings, alerts: list[AlertEvent]) -> None:
    create_topics(kafka, load_settings(WorkerSettings))
    producer = Producer(kafka.confluent_config())
    for alert in alerts:
        value, headers = encode_alert(alert)
        producer.produce(kafka.topic("alerts"), key=alert.tenant.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def test_page_draws_every_chart_offline_with_the_json_numbers(
    clickhouse_settings: ClickHouseSettings,
    redis_settings: RedisSettings,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = clickhouse_settings
    client = open_client(settings)
    migrate(client, settings.database)
    events = _events()
    sink = ClickHouseSink(BatchWriter(client, settings.database), lambda offsets: None)
    for offset, pe in enumerate(events):
        sink.add(pe, 0, offset)
    sink.flush()
    store = RedisBudgetStore(
        redis.Redis.from_url(redis_settings.url.get_secret_value()), KeyLayout(redis_settings.key_prefix)
    )
    store.publish_budgets("acme", [Budget.from_cli("acme-day", scope="tenant=acme", limit_tokens=5_000)])
    now_ms = int(time.time() * 1000)
    store.reconcile("acme", "acme-day", "tenant=acme", window_for("day", "UTC", now_ms).start_ms, 1_200, 3_600_000)
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("COSTPLANE_WORKER_API_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(settings.chdb_path))
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", settings.database)
    monkeypatch.setenv("COSTPLANE_REDIS_URL", redis_settings.url.get_secret_value())
    monkeypatch.setenv("COSTPLANE_REDIS_KEY_PREFIX", redis_settings.key_prefix)
    monkeypatch.setenv("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("COSTPLANE_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    _publish_alerts(kafka_settings, [_alert(1, T0 + HOUR), _alert(2, T0 + 3 * 24 * HOUR)])  # the second: out of range

    out = tmp_path / "report.html"
    window = ["--since", "2026-01-01", "--until", "2026-01-02"]
    done = CliRunner().invoke(build_app(), ["report", "html", "--out", str(out), *window])
    assert done.exit_code == 0, done.output
    written = _Page()
    written.feed(out.read_text())
    assert written.external == []  # self-contained: no script, style, image or frame comes from anywhere

    dom = subprocess.run(
        _offline("--dump-dom", out.as_uri()), capture_output=True, text=True, timeout=120, check=True
    ).stdout
    parsed = _Page()
    parsed.feed(dom)
    assert len(parsed.charts) >= 12, sorted(parsed.charts)
    for chart, shapes in parsed.charts.items():
        assert shapes > 0, f"{chart} drew nothing"
    assert dom.count('class="main-svg"') >= len(parsed.charts)
    assert parsed.external == []  # and drawing it added none

    def report(name: str, *args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(build_app(), ["report", name, *args, *window, "--format", "json"])
        assert result.exit_code == 0, result.output
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    # Every report of the framework is on the page with exactly the rows its JSON gives for the same range.
    from costplane.reports.definitions import REPORTS

    for name in REPORTS:
        assert parsed.tables[f"report-{name}"] == report(name), name
    tenants = report("spend", "--by", "tenant", "--top", "15")
    assert parsed.tables["top-tenant"] == [
        {k: r[k] for k in ("tenant", "requests", "attempts", "cost_nanos", "cost_usd")} for r in tenants
    ]
    assert sum(r["cost_nanos"] for r in tenants) == sum(pe.cost_nanos for pe in events)  # and they add up
    by_hour = report("spend", "--by", "hour,model")  # six hours of data: the page's time axis is the hour
    assert sorted(
        (r["hour"], r["model"], r["attempts"], r["cost_nanos"]) for r in parsed.tables["spend-by-model"]
    ) == sorted((r["hour"], r["model"], r["attempts"], r["cost_nanos"]) for r in by_hour)
    advice = CliRunner().invoke(build_app(), ["advise", *window, "--format", "json"])
    assert advice.exit_code == 0, advice.output
    assert [(r["kind"], r["monthly_saving_nanos"]) for r in parsed.tables["advice"]] == [
        (o["kind"], o["monthly_saving_nanos"]) for o in json.loads(advice.stdout)
    ]
    wasted = sum(pe.cost_nanos for pe in events if pe.event.status != "ok")
    assert sum(r["wasted_cost_nanos"] for r in parsed.tables["report-retries"]) == wasted
    assert [(r["budget_id"], r["member"], r["spent"], r["limit"], r["used"]) for r in parsed.tables["budgets"]] == [
        ("acme-day", "tenant=acme", 1_200, 5_000, "24.0%")
    ]

    assert [(r["kind"], r["action"], r["summary"]) for r in parsed.tables["alerts"]] == [
        ("retry_storm", "trigger", "storm 1")
    ]

    shot = tmp_path / "report.png"
    subprocess.run(
        _offline("--window-size=1400,5000", f"--screenshot={shot}", out.as_uri()),
        capture_output=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    assert shot.stat().st_size > 50_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-html.png")
    for key in store.client.scan_iter(f"{redis_settings.key_prefix}:*"):
        store.client.delete(key)
