"""``costplane budget status`` against real Redis (and chDB for ``--reconcile``): what the guard enforces, shown."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import Result
from typer.testing import CliRunner

from costplane.budgets import Budget, window_for
from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings, RedisSettings
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = [pytest.mark.redis]
GPT = {"provider": "openai", "model": "gpt-4o-mini"}
TENANT = "status-co"


@pytest.fixture
def store(redis_settings: RedisSettings) -> Iterator[RedisBudgetStore]:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    yield RedisBudgetStore(client, KeyLayout(redis_settings.key_prefix))
    for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
        client.delete(key)
    client.close()


def _env(redis_settings: RedisSettings, clickhouse: ClickHouseSettings | None = None) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COSTPLANE_")}
    env["COSTPLANE_REDIS_URL"] = redis_settings.url.get_secret_value()
    env["COSTPLANE_REDIS_KEY_PREFIX"] = redis_settings.key_prefix
    if clickhouse is not None:
        env["COSTPLANE_CLICKHOUSE_CHDB_PATH"] = str(clickhouse.chdb_path)
        env["COSTPLANE_CLICKHOUSE_DATABASE"] = clickhouse.database
    return env


def _status(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(build_app(), ["budget", "status", *args], env=env)


def _budgets() -> list[Budget]:
    return [
        Budget.from_cli("tokens-daily", scope=f"tenant={TENANT},user=*", limit_tokens=1_000),
        Budget.from_cli("tenant-month", scope=f"tenant={TENANT}", period="month", limit_usd="5"),
    ]


def test_spent_reservations_and_standing_decision(store: RedisBudgetStore, redis_settings: RedisSettings) -> None:
    store.publish_budgets(TENANT, _budgets())
    guard = BudgetGuard(store, decision_cache_s=0.0)
    # u1 settles three calls of 100 + 50 tokens; u2 holds one reservation (40 + 60 tokens worst case) open.
    for _ in range(3):
        guard.reserve({"tenant": TENANT, "user": "u1"}, prompt_tokens=100, max_tokens=100, **GPT).settle(
            {"input_tokens": 100, "output_tokens": 50}
        )
    held = guard.reserve({"tenant": TENANT, "user": "u2"}, prompt_tokens=40, max_tokens=60, **GPT)
    assert held.allowed
    guard.flush()
    now_ms = int(time.time() * 1000)
    day = window_for("day", "UTC", now_ms)
    decision = {
        "type": "decision",
        "action": "block",
        "tenant": TENANT,
        "budget_id": "tokens-daily",
        "member": f"tenant={TENANT},user=u3",
        "reason": "over",
        "spent": 1200,
        "limit": 1000,
        "unit": "tokens",
        "window_start_ms": day.start_ms,
        "window_end_ms": day.end_ms,
        "until_ms": day.end_ms,
        "version": 1,
        "at_ms": now_ms,
    }
    store.write_decision(TENANT, "tokens-daily", f"tenant={TENANT},user=u3", json.dumps(decision), day.end_ms)

    done = _status(_env(redis_settings), "--tenant", TENANT, "--format", "json")
    assert done.exit_code == 0, done.stderr
    rows = {(r["budget_id"], r["member"]): r for r in json.loads(done.stdout)}
    u1 = rows[("tokens-daily", f"tenant={TENANT},user=u1")]
    assert (u1["spent"], u1["limit"], u1["open_reservations"], u1["action"]) == (450, 1000, 0, None)
    assert u1["used"] == 0.45
    assert u1["window_end_ms"] == day.end_ms
    u2 = rows[("tokens-daily", f"tenant={TENANT},user=u2")]
    assert (u2["spent"], u2["open_reservations"], u2["reserved"]) == (0, 1, 100)
    u3 = rows[("tokens-daily", f"tenant={TENANT},user=u3")]
    assert (u3["action"], u3["decision_until_ms"], u3["spent"]) == ("block", day.end_ms, 0)
    month = rows[("tenant-month", f"tenant={TENANT}")]
    assert month["unit"] == "usd" and month["open_reservations"] == 1 and month["limit_usd"] == "5.000000000"
    assert month["window_end_ms"] == window_for("month", "UTC", now_ms).end_ms

    only = json.loads(_status(_env(redis_settings), "--budget", "tenant-month", "--format", "json").stdout)
    assert [r["budget_id"] for r in only] == ["tenant-month"]
    table = _status(_env(redis_settings), "--tenant", TENANT)
    assert table.exit_code == 0 and "tokens-daily" in table.stdout and "block" in table.stdout
    held.release()


def test_unknown_tenant_or_budget_is_one_line(store: RedisBudgetStore, redis_settings: RedisSettings) -> None:
    store.publish_budgets(TENANT, _budgets())
    for args in (["--tenant", "nobody"], ["--budget", "nothing"], ["--format", "yaml"]):
        done = _status(_env(redis_settings), *args)
        assert done.exit_code == 2, done.stdout
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _ledger_events(now_ms: int) -> list[PricedEvent]:
    """u1: 2 events of 300 + 100 tokens (800 in all); u2: 1 of 70 tokens. Costs are arbitrary exact integers."""
    rows = [("u1", 300, 100, 1_000), ("u1", 300, 100, 2_000), ("u2", 50, 20, 3_000)]
    return [
        PricedEvent(
            UsageEvent(
                event_id=f"led-{i}",
                occurred_at=now_ms - 1_000 * (i + 1),
                tenant=TENANT,
                provider="openai",
                model="gpt-4o-mini",
                request_id=f"r{i}",
                attempt=1,
                status="ok",
                input_tokens=inp,
                output_tokens=out,
                user_id=user,
            ),
            cost,
            "v1",
        )
        for i, (user, inp, out, cost) in enumerate(rows)
    ]


@pytest.mark.clickhouse
def test_reconcile_shows_ledger_and_drift(
    store: RedisBudgetStore, redis_settings: RedisSettings, clickhouse_settings: ClickHouseSettings
) -> None:
    store.publish_budgets(TENANT, _budgets())
    now_ms = int(time.time() * 1000)
    if window_for("day", "UTC", now_ms - 10_000).start_ms != window_for("day", "UTC", now_ms).start_ms:
        time.sleep(11)  # the ledger's events must fall in today's window (a run at midnight waits)
        now_ms = int(time.time() * 1000)
    day = window_for("day", "UTC", now_ms)
    month = window_for("month", "UTC", now_ms)
    # The worker's reconcile sets the counters: u1 exact (800), u2 counted 30 tokens more than billed (100 vs 70),
    # the tenant's USD counter 500 nano-USD short of the ledger (5_500 vs 6_000).
    store.reconcile(TENANT, "tokens-daily", f"tenant={TENANT},user=u1", day.start_ms, 800, 86_400_000)
    store.reconcile(TENANT, "tokens-daily", f"tenant={TENANT},user=u2", day.start_ms, 100, 86_400_000)
    store.reconcile(TENANT, "tenant-month", f"tenant={TENANT}", month.start_ms, 5_500, 86_400_000)

    settings = clickhouse_settings
    client = open_client(settings)
    migrate(client, settings.database)
    sink = ClickHouseSink(BatchWriter(client, settings.database), lambda offsets: None)
    for offset, pe in enumerate(_ledger_events(now_ms)):
        sink.add(pe, 0, offset)
    sink.flush()

    done = _status(_env(redis_settings, settings), "--tenant", TENANT, "--reconcile", "--format", "json")
    assert done.exit_code == 0, done.stderr
    rows = {(r["budget_id"], r["member"]): r for r in json.loads(done.stdout)}
    u1 = rows[("tokens-daily", f"tenant={TENANT},user=u1")]
    assert (u1["spent"], u1["ledger_spent"], u1["drift"], u1["drift_fraction"]) == (800, 800, 0, 0.0)
    u2 = rows[("tokens-daily", f"tenant={TENANT},user=u2")]
    assert (u2["spent"], u2["ledger_spent"], u2["drift"]) == (100, 70, 30)
    assert u2["drift_fraction"] == round(30 / 70, 6)
    tenant_row = rows[("tenant-month", f"tenant={TENANT}")]
    assert (tenant_row["spent"], tenant_row["ledger_spent"], tenant_row["drift"]) == (5_500, 6_000, -500)
    table = _status(_env(redis_settings, settings), "--tenant", TENANT, "--reconcile")
    assert table.exit_code == 0 and "drift" in table.stdout, table.stderr
