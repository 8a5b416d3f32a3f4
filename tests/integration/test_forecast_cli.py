"""``costplane forecast`` over what the sink wrote to embedded chDB: per tenant and per monthly budget member.

The history, with the expected projections worked out by hand (amounts in USD, the forecast made at
2026-11-10T12:00Z, so half of Nov 10 is still ahead and 20 days follow):

* user u1: 10 a day Nov 1–9, 4 on Nov 10 before noon (and 100 at 13:00, after the forecast's moment: left out);
* user u2: 1 a day Nov 3–9;
* no user: 7 on Nov 5.

Tenant acme per day: 10, 10, then Nov 3–9: 11, 11, 18, 11, 11, 11, 11 (mean 12, low 11, high 18), Nov 10: 4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

NOV1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DAY = 86_400_000
HOUR = 3_600_000
USD = 10**9

BUDGETS = """
- {id: acme-month, scope: tenant=acme, period: month, limit_usd: 400}
- {id: acme-users, scope: "tenant=acme,user=*", period: month, limit_usd: 250}
- {id: acme-daily, scope: tenant=acme, period: day, limit_usd: 50}
"""


def _event(n: int, at_ms: int, cost_nanos: int, user: str | None) -> PricedEvent:
    event = UsageEvent(
        event_id=f"ev-{n}",
        occurred_at=at_ms,
        tenant="acme",
        provider="openai",
        model="gpt-4o",
        request_id=f"r-{n}",
        attempt=1,
        status="ok",
        input_tokens=100,
        output_tokens=10,
        user_id=user,
    )
    return PricedEvent(event, cost_nanos, "v1")


def _history() -> list[PricedEvent]:
    out: list[PricedEvent] = []
    for day in range(9):  # Nov 1–9: u1 10 a day, in two events
        out += [
            _event(len(out), NOV1 + day * DAY + 9 * HOUR, 5 * USD, "u1"),
            _event(len(out) + 1, NOV1 + day * DAY + 15 * HOUR, 5 * USD, "u1"),
        ]
    for day in range(2, 9):  # Nov 3–9: u2 1 a day
        out.append(_event(len(out), NOV1 + day * DAY + 10 * HOUR, 1 * USD, "u2"))
    out.append(_event(len(out), NOV1 + 4 * DAY + 11 * HOUR, 7 * USD, None))  # Nov 5, no user
    out.append(_event(len(out), NOV1 + 9 * DAY + 8 * HOUR, 4 * USD, "u1"))  # Nov 10 morning
    out.append(_event(len(out), NOV1 + 9 * DAY + 13 * HOUR, 100 * USD, "u1"))  # after the forecast's moment
    return out


@pytest.fixture
def loaded(clickhouse_settings: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    client = open_client(clickhouse_settings)
    migrate(client, clickhouse_settings.database)
    sink = ClickHouseSink(BatchWriter(client, clickhouse_settings.database), lambda offsets: None)
    for offset, pe in enumerate(_history()):
        sink.add(pe, 0, offset)
    sink.flush()
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("COSTPLANE_WORKER_API_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(clickhouse_settings.chdb_path))
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", clickhouse_settings.database)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    return budgets


def _forecast(*args: str) -> Any:
    result = CliRunner().invoke(build_app(), ["forecast", "--at", "2026-11-10T12:00Z", *args])
    return result


def test_tenant_and_budget_member_projections(loaded: Path) -> None:
    result = _forecast("--budgets", str(loaded), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["tenant"], r["budget_id"], r["member"]) for r in rows] == [
        ("acme", None, None),
        ("acme", "acme-users", "tenant=acme,user=u1"),  # 299 of 250
        ("acme", "acme-month", "tenant=acme"),  # 354 of 400
        ("acme", "acme-users", "tenant=acme,user=u2"),  # 27.5 of 250
    ]
    tenant, u1, month, u2 = rows
    assert list(tenant) == [
        "tenant",
        "budget_id",
        "member",
        "month",
        "basis",
        "history_days",
        "month_to_date_nanos",
        "month_to_date_usd",
        "projected_nanos",
        "projected_usd",
        "low_nanos",
        "low_usd",
        "high_nanos",
        "high_usd",
        "limit_nanos",
        "limit_usd",
        "projected_share",
        "projected_cross_date",
    ]
    # acme: 10 + 10 + 84 + 4 = 108 so far; rate 12 (11 | 18): half of today and 20 days ahead
    assert tenant["month"] == "2026-11" and tenant["basis"] == "recent_days" and tenant["history_days"] == 9
    assert tenant["month_to_date_nanos"] == 108 * USD
    assert tenant["projected_nanos"] == (108 + 6 + 240) * USD
    assert tenant["low_nanos"] == 108 * USD + 5_500_000_000 + 220 * USD
    assert tenant["high_nanos"] == (108 + 9 + 360) * USD
    assert tenant["limit_nanos"] is None and tenant["projected_cross_date"] is None
    assert tenant["projected_usd"] == "354.000000000"
    # the budget on the whole tenant: the same numbers against its limit
    assert month["projected_nanos"] == 354 * USD and month["limit_nanos"] == 400 * USD
    assert month["projected_share"] == 354 / 400 and month["projected_cross_date"] is None
    # u1: 94 so far, 10 a day: 94 + 5 + 200 = 299; the running total reaches 250 on Nov 26 (99 + 16 × 10)
    assert u1["month_to_date_nanos"] == 94 * USD
    assert u1["projected_nanos"] == u1["low_nanos"] == u1["high_nanos"] == 299 * USD
    assert u1["projected_cross_date"] == "2026-11-26"
    # u2: 7 so far (history from Nov 3: 7 days), 1 a day: 7 + 0.5 + 20
    assert u2["history_days"] == 7
    assert u2["projected_nanos"] == 27_500_000_000 and u2["projected_cross_date"] is None


def test_one_budget_and_bad_input(loaded: Path) -> None:
    only = _forecast("--budgets", str(loaded), "--budget", "acme-users", "--format", "json")
    assert only.exit_code == 0, only.output
    assert [r["member"] for r in json.loads(only.stdout)] == ["tenant=acme,user=u1", "tenant=acme,user=u2"]
    table = _forecast("--budgets", str(loaded))
    assert table.exit_code == 0 and "2026-11-26" in table.stdout
    for args, message in [
        (["--budget", "nope"], "no budget 'nope'"),
        (["--budget", "acme-daily"], "per day: forecast projects monthly budgets"),
        (["--format", "xml"], "--format must be table or json"),
    ]:
        bad = _forecast("--budgets", str(loaded), *args)
        assert bad.exit_code == 2, bad.output
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
