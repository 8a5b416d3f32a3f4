"""Migrations: idempotent, tracked with checksums, a changed applied file refused; TTL follows the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings
from costplane.streams.sink.client import open_client
from costplane.streams.sink.errors import MigrationError
from costplane.streams.sink.migrations import Migration, load_migrations, migrate, status

pytestmark = pytest.mark.clickhouse


def _env(monkeypatch: pytest.MonkeyPatch, settings: ClickHouseSettings, **extra: str) -> None:
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(settings.chdb_path))
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", settings.database)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def test_migrate_is_idempotent_and_records_checksums(clickhouse_settings: ClickHouseSettings) -> None:
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    files = load_migrations()
    assert [m.version for m in files] == list(range(1, len(files) + 1))
    assert [s.status for s in status(client, db)] == ["pending"] * len(files)
    assert migrate(client, db) == files
    assert migrate(client, db) == []
    # Re-running every statement of every file is harmless too (IF NOT EXISTS throughout).
    for m in files:
        for stmt in m.statements(db):
            client.command(stmt)
    states = status(client, db)
    assert [s.status for s in states] == ["applied"] * len(files)
    recorded = client.query(f"SELECT version, name, checksum FROM {db}.schema_migrations ORDER BY version").result_rows
    assert recorded == [(m.version, m.name, m.checksum) for m in files]
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM {db}").result_rows}
    assert {
        "usage_events",
        "seen_event_ids",
        "sink_batches",
        "rollup_spend_minute",
        "rollup_spend_hour",
        "rollup_spend_day",
        "rollup_users_minute",
        "rollup_users_hour",
        "rollup_users_day",
        "schema_migrations",
    } <= tables


def test_changed_applied_file_is_refused_with_its_name(clickhouse_settings: ClickHouseSettings) -> None:
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    files = load_migrations()
    migrate(client, db, migrations=files[:1])
    edited = [Migration(files[0].version, files[0].name, files[0].sql + "\n-- edited\n"), *files[1:]]
    with pytest.raises(MigrationError, match=r"0001_usage_events\.sql") as info:
        migrate(client, db, migrations=edited)
    assert "new numbered file" in str(info.value)
    assert [s.status for s in status(client, db, edited)] == ["changed"] + ["pending"] * (len(files) - 1)
    # Nothing of the later files ran.
    assert "seen_event_ids" not in {r[0] for r in client.query(f"SHOW TABLES FROM {db}").result_rows}


def test_raw_ttl_follows_the_setting(clickhouse_settings: ClickHouseSettings) -> None:
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db, raw_ttl_days=400)
    assert "toIntervalDay(400)" in client.command(f"SHOW CREATE TABLE {db}.usage_events")
    migrate(client, db, raw_ttl_days=30)
    assert "toIntervalDay(30)" in client.command(f"SHOW CREATE TABLE {db}.usage_events")
    migrate(client, db, raw_ttl_days=0)
    assert "TTL" not in client.command(f"SHOW CREATE TABLE {db}.usage_events")


def test_cli_migrate_and_status(clickhouse_settings: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, clickhouse_settings, COSTPLANE_CLICKHOUSE_RAW_TTL_DAYS="90")
    runner = CliRunner()
    app = build_app()
    first = runner.invoke(app, ["db", "migrate", "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["applied"] == [f"{m.version:04d}_{m.name}" for m in load_migrations()] and out["raw_ttl_days"] == 90
    assert out["applied"][:3] == ["0001_usage_events", "0002_sink_ledger", "0003_rollups"]
    again = runner.invoke(app, ["db", "migrate", "--json"])
    assert json.loads(again.stdout)["applied"] == []
    shown = runner.invoke(app, ["db", "status", "--json"])
    assert shown.exit_code == 0
    assert [s["status"] for s in json.loads(shown.stdout)] == ["applied"] * len(load_migrations())
    table = runner.invoke(app, ["db", "status"])
    assert table.exit_code == 0 and "0003" in table.stdout and "applied" in table.stdout


def test_ttl_counts_from_ingestion_so_late_old_events_still_land(clickhouse_settings: ClickHouseSettings) -> None:
    from costplane.publisher.event import UsageEvent
    from costplane.streams.core.priced import PricedEvent
    from costplane.streams.sink.sink import ClickHouseSink
    from costplane.streams.sink.writer import BatchWriter

    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db, raw_ttl_days=1)
    sink = ClickHouseSink(BatchWriter(client, db), lambda offsets: None)
    old = UsageEvent("e-old", 1_600_000_000_000, "acme", "openai", "gpt-4o", "r", 1, "ok")  # 2020
    sink.add(PricedEvent(old, 7, "v1"), 0, 0)
    sink.flush()
    assert client.query(f"SELECT count() FROM {db}.usage_events").result_rows[0][0] == 1


def test_cli_refuses_a_directory_another_process_owns(
    clickhouse_settings: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    owned = f"{tmp_path}/owned"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from costplane.streams.sink.ownership import DirectoryLock; "
            "lock = DirectoryLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)",
            owned,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        _env(monkeypatch, clickhouse_settings)
        monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", owned)
        result = CliRunner().invoke(build_app(), ["db", "migrate"])
        assert result.exit_code == 1
        assert f"owned by process {holder.pid}" in " ".join(result.output.split())
        report = CliRunner().invoke(build_app(), ["report", "spend", "--by", "tenant"])
        assert report.exit_code == 1 and "serves no API" in " ".join(report.output.split())
    finally:
        holder.kill()
        holder.wait()


def test_upgrading_rolls_up_the_raw_events_stored_before_the_report_rollups(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    """A database written by a sink from before migration 0005 keeps its history in the reports after upgrading."""
    from datetime import UTC, datetime, timedelta

    from costplane.publisher.event import UsageEvent
    from costplane.reports.options import ReportOptions
    from costplane.streams.core.priced import PricedEvent
    from costplane.streams.sink.processor import LEDGER_COLUMNS, RAW_COLUMNS, Pending, raw_row
    from costplane.streams.sink.query import run_report

    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    files = load_migrations()
    migrate(client, db, migrations=[m for m in files if m.version < 5])  # the old schema
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    at = int((now - timedelta(days=3)).timestamp() * 1000)
    old_columns = [c for c in RAW_COLUMNS if c not in LEDGER_COLUMNS]
    rows = []
    events = [
        UsageEvent(
            f"e-{i}",
            at + i * 61_000,
            ("acme", "acme", "globex")[i % 3],
            "openai",
            "gpt-4o",
            f"r{i // 2}",
            1 + i % 2,
            "ok" if i % 4 else "error",
            input_tokens=100 + i,
            feature="chat",
        )
        for i in range(12)
    ]
    for i, event in enumerate(events):
        row = dict(
            zip(RAW_COLUMNS, raw_row(Pending(PricedEvent(event, 1_000 + i, "v1"), 0, i), "old", now), strict=True)
        )
        rows.append([row[c] for c in old_columns])
    client.insert(f"{db}.usage_events", rows, column_names=old_columns)

    applied = migrate(client, db)
    assert [m.version for m in applied] == [m.version for m in files if m.version >= 5]
    spend = run_report(client, ReportOptions.parse("spend", since="7d", now=now), db)
    assert spend.source.startswith("rollup")
    want = {}
    for tenant in ("acme", "globex"):
        mine = [(i, e) for i, e in enumerate(events) if e.tenant == tenant]
        want[tenant] = (
            len(mine),
            sum(e.attempt == 1 for _, e in mine),
            sum(e.status != "ok" for _, e in mine),
            sum(1_000 + i for i, _ in mine),
        )
    got = {r["tenant"]: (r["attempts"], r["requests"], r["failed_attempts"], r["cost_nanos"]) for r in spend.rows}
    assert got == want
    assert migrate(client, db) == []  # nothing again: the rollups are not counted twice
    again = run_report(client, ReportOptions.parse("spend", since="7d", now=now), db)
    assert again.rows == spend.rows
