"""``costplane report spend``: JSON/CSV/table shapes and exact sums, locally, through the owner's API, by URL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings
from costplane.publisher.event import TOKEN_BUCKETS, UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.query import answer_api
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def _events() -> list[PricedEvent]:
    out: list[PricedEvent] = []
    for i in range(240):
        event = UsageEvent(
            event_id=f"ev-{i}",
            occurred_at=T0 + (i % 48) * HOUR + i,
            tenant=("acme", "globex")[i // 2 % 2],
            provider="openai",
            model=("gpt-4o", "gpt-4o-mini", "o3")[i % 3],
            request_id=f"req-{i // 2}",
            attempt=1 + i % 2,
            status="ok" if i % 5 else "timeout",
            input_tokens=1000 + i,
            cached_input_tokens=i,
            cache_write_tokens=i % 7,
            output_tokens=3 * i,
            reasoning_tokens=i % 11,
            team=("a", None)[i % 2],
            plan=("free", "pro", None)[i % 3],
        )
        out.append(PricedEvent(event, 999_999_999 + i * 1_234_567, "v1"))
    return out


@pytest.fixture
def loaded(clickhouse_settings: ClickHouseSettings) -> tuple[Any, ClickHouseSettings, list[PricedEvent]]:
    client = open_client(clickhouse_settings)
    migrate(client, clickhouse_settings.database)
    events = _events()
    sink = ClickHouseSink(BatchWriter(client, clickhouse_settings.database), lambda offsets: None)
    for offset, pe in enumerate([*events, events[3], events[17]]):  # two redeliveries
        sink.add(pe, 0, offset)
    sink.flush()
    return client, clickhouse_settings, events


def _usd(nanos: int) -> str:
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


def _truth(events: list[PricedEvent], dims: tuple[str, ...]) -> list[dict[str, Any]]:
    """The spend report's rows by definition: requests are first attempts, failures are status != ok; rows by
    cost, largest first (then by the dimensions, missing last)."""
    groups: dict[tuple[Any, ...], list[PricedEvent]] = defaultdict(list)
    for pe in events:
        groups[tuple(getattr(pe.event, {"user": "user_id"}.get(d, d)) for d in dims)].append(pe)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(dims, key, strict=True))
        failed = [m for m in members if m.event.status != "ok"]
        row["requests"] = sum(1 for m in members if m.event.attempt == 1)
        row["attempts"] = len(members)
        row["retries"] = sum(1 for m in members if m.event.attempt > 1)
        row["failed_attempts"] = len(failed)
        row["failed_cost_nanos"] = sum(m.cost_nanos for m in failed)
        row["failed_cost_usd"] = _usd(row["failed_cost_nanos"])
        row["unpriced_attempts"] = sum(1 for m in members if m.unpriced)
        for bucket in TOKEN_BUCKETS:
            row[bucket] = sum(getattr(m.event, bucket) for m in members)
        row["cost_nanos"] = sum(m.cost_nanos for m in members)
        row["cost_usd"] = _usd(row["cost_nanos"])
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["cost_nanos"], *((v is None, v or "") for v in (r[d] for d in dims))))


def _env(monkeypatch: pytest.MonkeyPatch, settings: ClickHouseSettings, chdb_path: Path | None = None) -> None:
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("COSTPLANE_WORKER_API_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(chdb_path or settings.chdb_path))
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", settings.database)


SINCE = ("--since", "2025-12-31")


def _json_report(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(build_app(), ["report", "spend", *SINCE, *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


def test_json_rows_are_exact_and_shaped(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, settings, events = loaded
    _env(monkeypatch, settings)
    rows = _json_report("--by", "tenant,model")
    assert rows == _truth(events, ("tenant", "model"))
    by_tenant = _json_report("--by", "tenant")
    assert [(r["requests"], r["attempts"]) for r in by_tenant] == [(60, 120), (60, 120)]  # requests vs attempts
    assert list(rows[0]) == [
        "tenant",
        "model",
        "requests",
        "attempts",
        "retries",
        "failed_attempts",
        "failed_cost_nanos",
        "failed_cost_usd",
        "unpriced_attempts",
        *TOKEN_BUCKETS,
        "cost_nanos",
        "cost_usd",
    ]
    assert all(isinstance(r["cost_nanos"], int) and isinstance(r["cost_usd"], str) for r in rows)
    assert sum(r["cost_nanos"] for r in rows) == sum(pe.cost_nanos for pe in events)
    # Missing dimensions are null, not "".
    assert {r["team"] for r in _json_report("--by", "team")} == {"a", None}
    plan_rows = _json_report("--by", "plan,tenant")
    assert plan_rows == _truth(events, ("plan", "tenant"))


def test_filters_and_time_dimensions(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, settings, events = loaded
    _env(monkeypatch, settings)
    rows = _json_report("--by", "day", "--tenant", "acme", "--since", "2026-01-01T12:00:00Z", "--until", "2026-01-02")
    window = range(T0 + 12 * HOUR, T0 + 24 * HOUR)
    chosen = [pe for pe in events if pe.event.tenant == "acme" and pe.event.occurred_at in window]
    assert [r["day"] for r in rows] == ["2026-01-01"]
    assert rows[0]["attempts"] == len(chosen) and rows[0]["cost_nanos"] == sum(pe.cost_nanos for pe in chosen)
    hours = _json_report("--by", "hour,month")
    assert len(hours) == 48 and hours[0]["hour"] == "2026-01-01T00:00:00Z" and hours[0]["month"] == "2026-01-01"
    nobody = CliRunner().invoke(build_app(), ["report", "spend", "--tenant", "nobody", *SINCE])
    assert nobody.exit_code == 2 and "no tenant 'nobody'" in nobody.output


def test_csv_and_table(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, settings, events = loaded
    _env(monkeypatch, settings)
    runner = CliRunner()
    result = runner.invoke(build_app(), ["report", "spend", *SINCE, "--by", "model,status", "--format", "csv"])
    assert result.exit_code == 0, result.output
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    truth = _truth(events, ("model", "status"))
    assert [{k: str(v) for k, v in row.items()} for row in truth] == parsed
    table = runner.invoke(build_app(), ["report", "spend", *SINCE, "--by", "tenant"])
    assert table.exit_code == 0 and "acme" in table.stdout and "failed attempts cost" in table.stdout
    bad = runner.invoke(build_app(), ["report", "spend", "--by", "colour"])
    assert bad.exit_code == 2


class _ReportHandler(BaseHTTPRequestHandler):
    """What the worker's ``GET /api/report`` does: answer_api on its own client."""

    client: Any = None
    database = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        assert parts.path == "/api/report"
        body = json.dumps(answer_api(self.client, parts.query, self.database), default=str).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None


@pytest.fixture
def report_api(loaded: Any) -> Iterator[str]:
    client, settings, _ = loaded
    handler = type("Handler", (_ReportHandler,), {"client": client, "database": settings.database})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from costplane.streams.sink.ownership import DirectoryLock\n"
    "lock = DirectoryLock.acquire(Path(sys.argv[1]), api_url=sys.argv[2])\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


def test_owned_directory_is_reported_through_the_owners_api(
    loaded: Any, report_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, settings, events = loaded
    owned = tmp_path / "owned-chdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(owned), report_api], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        _env(monkeypatch, settings, chdb_path=owned)
        assert _json_report("--by", "tenant,feature,model") == _truth(events, ("tenant", "feature", "model"))
    finally:
        holder.kill()
        holder.wait()


def test_server_url_runs_the_same_code(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import clickhouse_connect

    client, settings, events = loaded
    calls: list[dict[str, Any]] = []

    def fake_get_client(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return client  # stands in for the server: same SQL, same rows

    monkeypatch.setattr(clickhouse_connect, "get_client", fake_get_client)
    _env(monkeypatch, settings)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_URL", "https://reporter@ch.example.com:8443")
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_PASSWORD", "s3cret")
    assert _json_report("--by", "provider") == _truth(events, ("provider",))
    assert calls == [
        {"host": "ch.example.com", "port": 8443, "username": "reporter", "password": "s3cret", "secure": True}
    ]
