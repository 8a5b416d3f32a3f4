"""``costplane rerate`` on embedded chDB: history priced again under a second catalog, raw rows and rollups.

Unit prices (nano-USD per token; every cost is a whole number of nano-USD, so no rounding is involved):

| model | catalog A input / cache read / output | catalog B input / cache read / output |
|---|---|---|
| alpha | 1000 / 500 / 2000 | 3000 / 1500 / 5000 |
| beta  | 100 / 100 / 400   | 200 / 200 / 800    |

Twelve events from 2026-10-31T12:00Z every two hours (two monthly partitions), tenants acme / globex alternating,
every third on beta, every fourth with 200 cached input tokens; one acme event on Oct 29 and one globex event on
Nov 4 lie outside the re-rated days and keep catalog A's prices.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings
from costplane.pricing.catalog import load_catalog
from costplane.pricing.ledger import ledger_amounts
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink import rerate as rerate_module
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

OCT31_NOON = 1_793_448_000_000  # 2026-10-31T12:00:00Z
HOUR = 3_600_000
PRICES = {  # nano-USD per token: input, cache read, output
    "A": {"alpha": (1000, 500, 2000), "beta": (100, 100, 400)},
    "B": {"alpha": (3000, 1500, 5000), "beta": (200, 200, 800)},
}


def catalog_document(label: str) -> dict[str, Any]:
    def usd(nanos: int) -> str:
        return f"{nanos / 10**9:.10f}".rstrip("0")

    models = {
        m: {
            "provider": "acme-ai",
            "input_cost_per_token": usd(i),
            "cache_read_input_token_cost": usd(c),
            "output_cost_per_token": usd(o),
        }
        for m, (i, c, o) in PRICES[label].items()
    }
    return {
        "format": "costplane-price-catalog",
        "format_version": 1,
        "versions": [{"price_version": f"{label}@2026", "effective_from": "2020-01-01", "models": models}],
    }


def events() -> list[UsageEvent]:
    out = []
    for i in range(12):
        out.append(
            UsageEvent(
                event_id=f"00000000-0000-4000-8000-{i:012d}",
                occurred_at=OCT31_NOON + i * 2 * HOUR,
                tenant=("acme", "globex")[i % 2],
                provider="acme-ai",
                model="beta" if i % 3 == 2 else "alpha",
                request_id=f"r{i}",
                attempt=1,
                status="ok",
                input_tokens=1000 + 10 * i,
                cached_input_tokens=200 if i % 4 == 0 else 0,
                output_tokens=100 + i,
            )
        )
    out.append(
        UsageEvent(
            event_id="00000000-0000-4000-8000-000000000100",
            occurred_at=OCT31_NOON - 2 * 24 * HOUR,
            tenant="acme",
            provider="acme-ai",
            model="alpha",
            request_id="old",
            attempt=1,
            status="ok",
            input_tokens=500,
            output_tokens=50,
        )
    )
    out.append(
        UsageEvent(
            event_id="00000000-0000-4000-8000-000000000101",
            occurred_at=OCT31_NOON + 4 * 24 * HOUR,
            tenant="globex",
            provider="acme-ai",
            model="beta",
            request_id="new",
            attempt=1,
            status="ok",
            input_tokens=700,
            output_tokens=70,
        )
    )
    return out


def in_range(e: UsageEvent) -> bool:
    return OCT31_NOON - 12 * HOUR <= e.occurred_at < OCT31_NOON + 36 * HOUR  # Oct 31 and Nov 1


def cost(e: UsageEvent, label: str) -> int:
    i, c, o = PRICES[label][e.model]
    return e.input_tokens * i + e.cached_input_tokens * c + e.output_tokens * o


@pytest.fixture
def stored(clickhouse_settings: ClickHouseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    paths = {}
    for label in ("A", "B"):
        paths[label] = tmp_path / f"{label}.json"
        paths[label].write_text(json.dumps(catalog_document(label)))
    catalog_a = load_catalog(paths["A"])
    client = open_client(clickhouse_settings)
    migrate(client, clickhouse_settings.database)
    sink = ClickHouseSink(BatchWriter(client, clickhouse_settings.database), lambda offsets: None)
    for offset, e in enumerate(events()):
        c = catalog_a.price_event(e)
        sink.add(PricedEvent(e, c.cost_nanos, c.price_version, c.unpriced), 0, offset, ledger_amounts(catalog_a, e))
    sink.flush()
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("COSTPLANE_WORKER_API_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(clickhouse_settings.chdb_path))
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", clickhouse_settings.database)
    return client, clickhouse_settings.database, paths


def cli(*args: str) -> Any:
    return CliRunner().invoke(build_app(), list(args))


def answer_of(result: Any) -> Any:
    """The JSON document (the last line: logs of the library go to stdout when no CLI entry point set them up)."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def spend_by_tenant_model() -> dict[tuple[str, str], int]:
    result = cli("report", "spend", "--by", "tenant,model", "--since", "2026-10-01", "--format", "json")
    assert result.exit_code == 0, result.output
    return {(r["tenant"], r["model"]): r["cost_nanos"] for r in json.loads(result.stdout)}


def expected_spend(rerated: set[str]) -> dict[tuple[str, str], int]:
    """Events of the re-rated tenants inside the range at catalog B, everything else at A."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for e in events():
        out[(e.tenant, e.model)] += cost(e, "B" if in_range(e) and e.tenant in rerated else "A")
    return dict(out)


def raw_ratings(client: Any, database: str) -> dict[str, tuple[int, str, int]]:
    rows = client.query(
        f"SELECT event_id, cost_nanos, price_version, input_cost_nanos FROM {database}.usage_events"
    ).result_rows
    return {str(r[0]): (int(r[1]), str(r[2]), int(r[3])) for r in rows}


RANGE = ("--since", "2026-10-31", "--until", "2026-11-01T12:00Z")  # widened to whole days: Oct 31 and Nov 1


def test_rerate_makes_spend_match_the_second_catalog_and_a_second_run_changes_nothing(stored: Any) -> None:
    client, database, paths = stored
    assert spend_by_tenant_model() == expected_spend(set())

    dry = cli("rerate", "--catalog", str(paths["B"]), *RANGE, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    answer = answer_of(dry)
    assert answer["written"] is False and answer["events"] == 12 and answer["changed_events"] == 12
    by_group = {(r["tenant"], r["model"]): r for r in answer["rows"]}
    for (tenant, model), row in by_group.items():
        group = [e for e in events() if in_range(e) and (e.tenant, e.model) == (tenant, model)]
        assert row["old_cost_nanos"] == sum(cost(e, "A") for e in group)
        assert row["new_cost_nanos"] == sum(cost(e, "B") for e in group)
        assert row["difference_nanos"] == row["new_cost_nanos"] - row["old_cost_nanos"]
        assert row["new_cost_usd"] is not None
    assert spend_by_tenant_model() == expected_spend(set())  # nothing written

    done = cli("rerate", "--catalog", str(paths["B"]), *RANGE, "--format", "json")
    assert done.exit_code == 0, done.output
    assert answer_of(done)["written"] is True
    assert spend_by_tenant_model() == expected_spend({"acme", "globex"})
    leftovers = client.query(
        "SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE '%rerate%'",
        parameters={"d": database},
    ).result_rows
    assert leftovers == []  # the working tables are dropped when done
    ratings = raw_ratings(client, database)
    for e in events():
        label = "B" if in_range(e) else "A"
        i, c, _o = PRICES[label][e.model]
        assert ratings[e.event_id] == (cost(e, label), f"{label}@2026", e.input_tokens * i + e.cached_input_tokens * c)
    by_day = cli("report", "spend", "--by", "day", "--since", "2026-10-01", "--format", "json")
    days = {r["day"]: r["cost_nanos"] for r in json.loads(by_day.stdout)}
    assert days["2026-10-31"] == sum(
        cost(e, "B") for e in events() if in_range(e) and e.occurred_at < OCT31_NOON + 12 * HOUR
    )

    again = cli("rerate", "--catalog", str(paths["B"]), *RANGE, "--format", "json")
    assert again.exit_code == 0, again.output
    assert answer_of(again)["changed_events"] == 0
    assert raw_ratings(client, database) == ratings
    assert spend_by_tenant_model() == expected_spend({"acme", "globex"})
    count = client.query(f"SELECT count() FROM {database}.usage_events").result_rows[0][0]
    assert count == len(events())


def test_one_tenant_and_an_interrupted_rerate(stored: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, database, paths = stored
    real_swap = rerate_module._swap
    calls: list[str] = []

    def crash_on_second(client_: Any, database_: str, table: str, staging: str, partition: str) -> None:
        calls.append(f"{table}:{partition}")
        if len(calls) == 2:
            raise RuntimeError("killed mid re-rate")
        real_swap(client_, database_, table, staging, partition)

    monkeypatch.setattr(rerate_module, "_swap", crash_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        rerate_module.run_rerate(
            client,
            rerate_module.RerateRequest.from_query_string(
                rerate_module.RerateRequest.build(
                    *_range(), now=_range()[1], tenant="acme", catalog=str(paths["B"])
                ).to_query_string()
            ),
            database,
        )
    # October's raw partition was swapped, November's was not: every event has one whole rating, A or B.
    ratings = raw_ratings(client, database)
    for e in events():
        rated = "B" if e.tenant == "acme" and in_range(e) and e.occurred_at < OCT31_NOON + 12 * HOUR else "A"
        i, c, _o = PRICES[rated][e.model]
        assert ratings[e.event_id] == (cost(e, rated), f"{rated}@2026", e.input_tokens * i + e.cached_input_tokens * c)
    monkeypatch.setattr(rerate_module, "_swap", real_swap)

    done = cli("rerate", "--catalog", str(paths["B"]), *RANGE, "--tenant", "acme", "--format", "json")
    assert done.exit_code == 0, done.output
    assert spend_by_tenant_model() == expected_spend({"acme"})


def _range() -> tuple[Any, Any]:
    from datetime import UTC, datetime

    return datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)


def test_bad_input_is_one_line_and_exit_2(stored: Any, tmp_path: Path) -> None:
    _client, _database, paths = stored
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for args in (
        ["--catalog", str(broken)],
        ["--catalog", str(paths["B"]), "--price-version", "B@2026"],
        [],
        ["--price-version", "no-such-version"],
        ["--catalog", str(paths["B"]), "--since", "yesterday-ish"],
        ["--catalog", str(paths["B"]), "--since", "2026-11-02", "--until", "2026-10-30"],
    ):
        result = cli("rerate", *args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_refuses_when_raw_events_are_gone(stored: Any) -> None:
    client, database, paths = stored
    client.command(
        f"ALTER TABLE {database}.usage_events DELETE WHERE event_id = '00000000-0000-4000-8000-000000000003'",
        settings={"mutations_sync": 2},
    )
    result = cli("rerate", "--catalog", str(paths["B"]), *RANGE)
    assert result.exit_code == 2
    assert "narrow --since" in result.stderr
    assert spend_by_tenant_model() == expected_spend(set())


def test_price_version_applies_one_version_of_the_catalog_in_force(
    stored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, database, _paths = stored
    both = catalog_document("A")
    later = catalog_document("B")["versions"][0]
    both["versions"].append({**later, "price_version": "B@2030", "effective_from": "2030-01-01"})
    in_force = tmp_path / "in-force.json"
    in_force.write_text(json.dumps(both))
    monkeypatch.setenv("COSTPLANE_PRICING_CATALOG", str(in_force))
    # by occurred_at the 2026 events are A's; naming B@2030 prices every one of them with it
    done = cli("rerate", "--price-version", "B@2030", *RANGE, "--tenant", "globex", "--format", "json")
    assert done.exit_code == 0, done.output
    assert answer_of(done)["price_versions"] == ["B@2030"]
    assert spend_by_tenant_model() == expected_spend({"globex"})
    ratings = raw_ratings(client, database)
    assert {ratings[e.event_id][1] for e in events() if in_range(e) and e.tenant == "globex"} == {"B@2030"}
    assert {ratings[e.event_id][1] for e in events() if e.tenant == "acme"} == {"A@2026"}
