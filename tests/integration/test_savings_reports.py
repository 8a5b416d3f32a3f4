"""The savings reports on a dataset with known answers, and the SQL re-pricing held to the Python one.

Background features on the standard tier, a frontier model with short outputs, calls without max_tokens, repeated
content hashes, retries, staging traffic, sessions with growing history, provider-billed costs and a long-context
model whose price tier changes per call. Every expected number is computed here from the catalog's unit prices
(``explain``) with Decimal and Fraction arithmetic, per call, rounded half-even once per call.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from costplane.config import ClickHouseSettings
from costplane.pricing.catalog import default_catalog
from costplane.pricing.ledger import ledger_amounts
from costplane.pricing.repricing import Buckets, Target, reprice
from costplane.publisher.event import UsageEvent
from costplane.reports.options import ReportOptions
from costplane.reports.repricing_sql import compile_routes, half_even
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.processor import Pending
from costplane.streams.sink.query import run_report
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

NANO = Decimal(10) ** 9
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def _nanos(usd: Decimal) -> int:
    return int((usd * NANO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def list_price(e: UsageEvent, model: str | None = None, tier: str | None = None) -> int | None:
    """One call at the catalog's unit prices for its prompt size (None: the model has no price)."""
    prompt = e.input_tokens + e.cached_input_tokens + e.cache_write_tokens
    rates = default_catalog().explain(
        e.provider, model or e.model, prompt_tokens=prompt, service_tier=tier or e.service_tier
    )
    if rates is None:
        return None
    p = {k: v.usd for k, v in rates.items()}
    return _nanos(
        e.input_tokens * p["input"]
        + e.cached_input_tokens * p["cached_input"]
        + e.cache_write_tokens * p["cache_write"]
        + e.output_tokens * p["output"]
        + e.reasoning_tokens * p["reasoning"]
    )


def prompt_side(e: UsageEvent) -> int:
    """The prompt side of a call's cost (uncached input, cache reads, cache writes), rounded once."""
    prompt = e.input_tokens + e.cached_input_tokens + e.cache_write_tokens
    rates = default_catalog().explain(e.provider, e.model, prompt_tokens=prompt, service_tier=e.service_tier)
    assert rates is not None
    return _nanos(
        e.input_tokens * rates["input"].usd
        + e.cached_input_tokens * rates["cached_input"].usd
        + e.cache_write_tokens * rates["cache_write"].usd
    )


def output_price(e: UsageEvent, tokens: int) -> int:
    """``tokens`` output tokens at the call's own output price (its size tier), rounded once."""
    prompt = e.input_tokens + e.cached_input_tokens + e.cache_write_tokens
    rates = default_catalog().explain(e.provider, e.model, prompt_tokens=prompt, service_tier=e.service_tier)
    assert rates is not None
    return _nanos(tokens * rates["output"].usd)


@dataclass
class Call:
    e: UsageEvent
    cost: int

    @property
    def prompt(self) -> int:
        return self.e.input_tokens + self.e.cached_input_tokens + self.e.cache_write_tokens


def dataset() -> list[UsageEvent]:
    base = int((NOW - timedelta(hours=6)).timestamp() * 1000)
    out: list[UsageEvent] = []

    def add(**kw: Any) -> None:
        fields: dict[str, Any] = dict(
            event_id=str(uuid.uuid4()),
            occurred_at=base + len(out) * 41_000,
            tenant="acme",
            provider="openai",
            request_id=f"r{len(out)}",
            attempt=1,
            status="ok",
            env="prod",
        )
        fields.update(kw)
        out.append(UsageEvent(**fields))

    for i in range(12):  # a frontier model doing classification: short outputs, no max_tokens
        add(model="gpt-4o", feature="classify", team="ops", input_tokens=900 + 7 * i, output_tokens=8 + 3 * i)
    for i in range(6):  # a nightly job on the standard tier
        add(
            model="gpt-4o-mini",
            feature="nightly",
            team="data",
            input_tokens=4000 + i,
            output_tokens=300 + i,
            max_tokens=800,
        )
    for i, h in enumerate(("h1", "h1", "h2", "h1", "h3", "h2")):  # re-embedding unchanged documents
        add(
            model="text-embedding-3-small",
            feature="index",
            team="data",
            operation="embedding",
            input_tokens=2000 + i,
            content_hash=h,
        )
    for s in range(4):  # chat sessions with growing history, a capped output, and a retry
        for turn in (1, 2, 3):
            add(
                model="gpt-4o",
                feature="chat",
                team="web",
                session_id=f"s{s}",
                turn=turn,
                max_tokens=1024,
                input_tokens=1500 + 800 * (turn - 1),
                output_tokens=200 + 10 * s,
                request_id=f"chat{s}-{turn}",
            )
        add(
            model="gpt-4o",
            feature="chat",
            team="web",
            session_id=f"s{s}",
            turn=4,
            status="invalid_output",
            input_tokens=4100,
            output_tokens=400,
            max_tokens=1024,
            request_id=f"chat{s}-4",
        )
        add(
            model="gpt-4o",
            feature="chat",
            team="web",
            session_id=f"s{s}",
            turn=4,
            attempt=2,
            max_tokens=1024,
            input_tokens=4100,
            output_tokens=30,
            request_id=f"chat{s}-4",
        )
    for i in range(101):  # uncapped summaries: one runs away
        add(
            model="gpt-4o-mini",
            feature="summarize",
            team="docs",
            input_tokens=2000,
            output_tokens=5000 if i == 50 else 100 + i % 7,
        )
    for _ in range(5):  # a staging load test
        add(model="gpt-4o-mini", feature="chat", team="web", env="staging", input_tokens=3000, output_tokens=500)
    for i in range(3):  # long-context calls: the size tier changes per call
        add(
            tenant="globex",
            provider="vertex_ai",
            model="gemini-2.5-pro",
            feature="research",
            team="lab",
            input_tokens=(150_000, 210_000, 260_000)[i],
            output_tokens=40,
        )
    for i in range(4):  # the provider's own bill, slightly above the catalog
        add(
            tenant="globex",
            model="gpt-4o-mini",
            feature="support",
            team="help",
            input_tokens=1000,
            output_tokens=100,
            billed_cost_nanos=215_000 + 100 * i,
        )
    return out


@pytest.fixture(scope="module")
def savings_chdb(chdb_dir: Path) -> Path:
    """The session's embedded directory (one process can open only one), with a database of this module's own."""
    return chdb_dir


@pytest.fixture(scope="module")
def loaded(savings_chdb: Path) -> tuple[Any, str, list[Call]]:
    settings = ClickHouseSettings(chdb_path=savings_chdb, database=f"t{uuid.uuid4().hex[:10]}")
    client = open_client(settings)
    migrate(client, settings.database)
    catalog = default_catalog()
    events = dataset()
    items = []
    for offset, e in enumerate(events):
        cost = catalog.price_event(e)
        items.append(
            Pending(
                PricedEvent(e, cost.cost_nanos, cost.price_version, cost.unpriced),
                0,
                offset,
                ledger_amounts(catalog, e),
            )
        )
    writer = BatchWriter(client, settings.database)
    rows = writer.insert(items, "b1")
    writer.mark_seen("b1", rows)
    calls = []
    for e in events:
        cost = list_price(e)
        assert cost is not None
        calls.append(Call(e, cost))
    return client, settings.database, calls


@pytest.fixture(autouse=True)
def _assumptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_REPORTS_BACKGROUND_FEATURES", "nightly")
    monkeypatch.delenv("COSTPLANE_REPORTS_ROUTING_FILE", raising=False)


def report(loaded: tuple[Any, str, list[Call]], name: str, **kw: Any) -> list[dict[str, Any]]:
    client, database, _ = loaded
    rows: list[dict[str, Any]] = run_report(client, ReportOptions.parse(name, since="1d", now=NOW, **kw), database).rows
    return rows


def by(calls: list[Call], key: Callable[[Call], tuple[Any, ...]]) -> dict[tuple[Any, ...], list[Call]]:
    out: dict[tuple[Any, ...], list[Call]] = defaultdict(list)
    for c in calls:
        out[key(c)].append(c)
    return out


def usd(nanos: int) -> str:
    sign = "-" if nanos < 0 else ""
    return f"{sign}{abs(nanos) // 10**9}.{abs(nanos) % 10**9:09d}"


CHEAPER = {"gpt-4o": "gpt-4o-mini", "gemini-2.5-pro": "gemini-2.5-flash"}


def test_models_reprices_every_call_on_the_cheaper_model(loaded: tuple[Any, str, list[Call]]) -> None:
    rows = {(r["feature"], r["model"]): r for r in report(loaded, "models")}
    want = {}
    for (feature, model), cs in by(loaded[2], lambda c: (c.e.feature, c.e.model)).items():
        outputs = sorted(c.e.output_tokens for c in cs)
        cost = sum(c.cost for c in cs)
        cheaper = CHEAPER.get(model)
        on_cheaper = sum(list_price(c.e, cheaper) or 0 for c in cs) if cheaper else None
        want[(feature, model)] = {
            "feature": feature,
            "model": model,
            "calls": len(cs),
            "p50_output_tokens": outputs[int(0.5 * len(cs))],
            "p90_output_tokens": outputs[int(0.9 * len(cs))],
            "short_output_share": sum(o <= 64 for o in outputs) / len(cs),
            "cost_nanos": cost,
            "cost_usd": usd(cost),
            "cheaper_model": cheaper,
            "cost_on_cheaper_nanos": on_cheaper,
            "cost_on_cheaper_usd": usd(on_cheaper) if cheaper else None,
            "saving_nanos": cost - on_cheaper if on_cheaper is not None else None,
            "saving_usd": usd(cost - on_cheaper) if on_cheaper is not None else None,
        }
    assert rows == want
    assert all(list(rows[k]) == list(want[k]) for k in want)
    # Per call, not on summed tokens: the long-context calls cross the 200k tier one by one.
    research = [c for c in loaded[2] if c.e.model == "gemini-2.5-pro"]
    assert rows[("research", "gemini-2.5-pro")]["cost_nanos"] == sum(c.cost for c in research)


def test_batch_reprices_background_work_at_the_batch_tier(loaded: tuple[Any, str, list[Call]]) -> None:
    def reason(c: Call) -> str:
        if c.e.feature == "nightly":
            return "configured feature"
        if c.e.session_id is None and c.e.operation == "embedding":
            return "embedding without a session"
        return ""

    background = [c for c in loaded[2] if reason(c)]
    rows = {(r["feature"], r["model"]): r for r in report(loaded, "batch")}
    want = {}
    for (feature, model), cs in by(background, lambda c: (c.e.feature, c.e.model)).items():
        cost = sum(c.cost for c in cs)
        batch = sum(list_price(c.e, tier="batch") or 0 for c in cs)
        want[(feature, model)] = {
            "feature": feature,
            "model": model,
            "calls": len(cs),
            "cost_nanos": cost,
            "cost_usd": usd(cost),
            "batch_cost_nanos": batch,
            "batch_cost_usd": usd(batch),
            "saving_nanos": cost - batch,
            "saving_usd": usd(cost - batch),
            "reasons": sorted({reason(c) for c in cs}),
        }
    assert rows == want and set(want) == {("nightly", "gpt-4o-mini"), ("index", "text-embedding-3-small")}


def test_max_tokens_headroom(loaded: tuple[Any, str, list[Call]]) -> None:
    rows = {(r["feature"], r["model"]): r for r in report(loaded, "max-tokens")}
    want = {}
    for key, cs in by([c for c in loaded[2] if c.e.status == "ok"], lambda c: (c.e.feature, c.e.model)).items():
        outputs = sorted(c.e.output_tokens for c in cs)
        caps = sorted(c.e.max_tokens for c in cs if c.e.max_tokens is not None)
        p50_max = caps[int(0.5 * len(caps))] if caps else None
        p99 = outputs[int(0.99 * len(outputs))]
        excess = sum(output_price(c.e, max(c.e.output_tokens - p99, 0)) for c in cs if c.e.max_tokens is None)
        want[key] = {
            "feature": key[0],
            "model": key[1],
            "calls": len(cs),
            "calls_without_max_tokens": sum(c.e.max_tokens is None for c in cs),
            "p50_max_tokens": p50_max,
            "p50_output_tokens": outputs[int(0.5 * len(outputs))],
            "p99_output_tokens": p99,
            "headroom": p50_max / p99 if p50_max is not None else None,
            "excess_output_cost_nanos": excess,
            "excess_output_cost_usd": usd(excess),
        }
    assert rows == want


def test_embeddings_repeats(loaded: tuple[Any, str, list[Call]]) -> None:
    embeds = sorted((c for c in loaded[2] if c.e.operation == "embedding"), key=lambda c: c.e.occurred_at)
    seen: set[tuple[str, str, str | None]] = set()
    repeats = []
    for c in embeds:
        key = (c.e.tenant, c.e.model, c.e.content_hash)
        if key in seen:
            repeats.append(c)
        seen.add(key)
    assert report(loaded, "embeddings") == [
        {
            "feature": "index",
            "embedding_calls": len(embeds),
            "distinct_content": len(seen),
            "repeat_calls": len(repeats),
            "repeat_cost_nanos": sum(c.cost for c in repeats),
            "repeat_cost_usd": usd(sum(c.cost for c in repeats)),
        }
    ]
    assert len(repeats) == 3


def test_billing_against_the_catalog(loaded: tuple[Any, str, list[Call]]) -> None:
    billed = [c for c in loaded[2] if c.e.billed_cost_nanos is not None]
    b = sum(c.e.billed_cost_nanos or 0 for c in billed)
    computed = sum(c.cost for c in billed)
    assert report(loaded, "billing") == [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "events_with_billed": len(billed),
            "billed_nanos": b,
            "billed_usd": usd(b),
            "computed_nanos": computed,
            "computed_usd": usd(computed),
            "difference_nanos": b - computed,
            "difference_usd": usd(b - computed),
            "difference": (b - computed) / computed,
        }
    ]


def test_leaks_waterfall_counts_no_nano_twice(loaded: tuple[Any, str, list[Call]]) -> None:
    calls = loaded[2]
    sessions = by([c for c in calls if c.e.session_id], lambda c: (c.e.tenant, c.e.session_id))
    baseline = {k: min(cs, key=lambda c: (c.e.turn, c.e.attempt)).prompt for k, cs in sessions.items()}
    seen: set[tuple[str, str, str | None]] = set()
    per_tenant: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in sorted(calls, key=lambda c: c.e.occurred_at):
        e = c.e
        repeat = False
        if e.operation == "embedding" and e.content_hash:
            repeat = (e.tenant, e.model, e.content_hash) in seen
            seen.add((e.tenant, e.model, e.content_hash))
        history = 0
        if e.session_id and e.turn:
            extra = max(c.prompt - baseline[(e.tenant, e.session_id)], 0)
            history = round(Fraction(prompt_side(e) * extra, c.prompt))  # half-even, as every amount
        cheaper = CHEAPER.get(e.model)
        model_saving = max(c.cost - (list_price(e, cheaper) or 0), 0) if cheaper and e.output_tokens <= 64 else 0
        background = e.feature == "nightly" or (e.session_id is None and e.operation == "embedding")
        batch_saving = max(c.cost - (list_price(e, tier="batch") or 0), 0) if background else 0
        leaks = [
            ("nonprod_nanos", c.cost if e.env not in (None, "prod", "production") else 0),
            ("retry_waste_nanos", c.cost if e.status != "ok" else 0),
            ("repeat_embedding_nanos", c.cost if repeat else 0),
            ("history_nanos", history),
            ("uncached_prefix_nanos", 0),  # no system prompts in this dataset
            ("model_saving_nanos", model_saving),
            ("batch_saving_nanos", batch_saving),
        ]
        left = c.cost
        row = per_tenant[e.tenant]
        row["total_cost_nanos"] += c.cost
        for name, amount in leaks:
            taken = min(amount, left)
            row[name] += taken
            left -= taken
        row["essential_nanos"] += left
    rows = report(loaded, "leaks")
    columns = [
        "total_cost_nanos",
        "retry_waste_nanos",
        "history_nanos",
        "uncached_prefix_nanos",
        "batch_saving_nanos",
        "model_saving_nanos",
        "repeat_embedding_nanos",
        "nonprod_nanos",
        "essential_nanos",
    ]
    got = {r["tenant"]: {k: r[k] for k in columns} for r in rows if not r["overall"]}
    assert got == {t: {k: v.get(k, 0) for k in columns} for t, v in per_tenant.items()}
    overall = rows[-1]
    assert overall["overall"] is True and overall["tenant"] is None
    assert {k: overall[k] for k in columns} == {k: sum(v.get(k, 0) for v in per_tenant.values()) for k in columns}
    assert sum(overall[k] for k in columns[1:]) == overall["total_cost_nanos"]  # every nano owned once
    assert overall["leak_multiplier"] == overall["total_cost_nanos"] / overall["essential_nanos"]
    assert all(
        overall[k] > 0
        for k in (
            "retry_waste_nanos",
            "history_nanos",
            "batch_saving_nanos",
            "model_saving_nanos",
            "repeat_embedding_nanos",
            "nonprod_nanos",
        )
    )


def test_sql_repricing_equals_the_python_engine_per_call(loaded: tuple[Any, str, list[Call]]) -> None:
    """The compiled SQL and :func:`reprice` agree on random calls across tiers, size tiers and cache mixes."""
    client = loaded[0]
    catalog = default_catalog()
    rng = random.Random(2)
    models = [("openai", "gpt-4o"), ("vertex_ai", "gemini-2.5-pro"), ("anthropic", "claude-sonnet-4-5")]
    targets = {
        ("openai", "gpt-4o"): ("openai", "gpt-4o-mini"),
        ("vertex_ai", "gemini-2.5-pro"): ("vertex_ai", "gemini-2.5-flash"),
        ("anthropic", "claude-sonnet-4-5"): ("anthropic", "claude-haiku-4-5"),
    }
    now_ms = int(NOW.timestamp() * 1000)
    calls = []
    for _ in range(300):
        provider, model = rng.choice(models)
        b = Buckets(
            rng.randrange(0, 300_000),
            rng.randrange(0, 50_000),
            rng.randrange(0, 20_000),
            rng.randrange(0, 5_000),
            rng.randrange(0, 3_000),
        )
        calls.append((provider, model, b, rng.choice([None, "batch", "priority", "flex"])))
    for tier in (None, "batch"):
        compiled = compile_routes(catalog, targets, tier=tier)
        values = ", ".join(
            f"('{p}', '{m}', {b.input_tokens}, {b.cached_input_tokens}, {b.cache_write_tokens}, {b.output_tokens}, "
            f"{b.reasoning_tokens}, {'NULL' if t is None else repr(t)})"
            for p, m, b, t in calls
        )
        sql = (
            f"SELECT {half_even('_units', '_div')} FROM (SELECT {compiled.units} AS _units, "
            f"{compiled.divisor} AS _div FROM (SELECT c.1 AS provider, c.2 AS model, c.3 AS input_tokens, "
            f"c.4 AS cached_input_tokens, c.5 AS cache_write_tokens, c.6 AS output_tokens, "
            f"c.7 AS reasoning_tokens, CAST(c.8 AS Nullable(String)) AS service_tier, "
            f"fromUnixTimestamp64Milli(toInt64({now_ms}), 'UTC') AS occurred_at "
            f"FROM (SELECT arrayJoin([{values}]) AS c)))"
        )
        got = [int(r[0]) for r in client.query(sql, parameters=compiled.params).result_rows]
        want = []
        for provider, model, b, t in calls:
            to_provider, to_model = targets[(provider, model)]
            cost = reprice(
                catalog, provider, model, b, t, now_ms, Target(provider=to_provider, model=to_model, service_tier=tier)
            )
            want.append(cost.cost_nanos)
        assert got == want, tier


def test_advisor_ranks_the_savings_the_reports_show(
    loaded: tuple[Any, str, list[Call]], savings_chdb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from costplane.cli.main import build_app

    client, database, calls = loaded
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_DATABASE", database)
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_CHDB_PATH", str(savings_chdb))
    monkeypatch.delenv("COSTPLANE_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("COSTPLANE_WORKER_API_URL", raising=False)
    monkeypatch.setenv("COSTPLANE_REPORTS_ADVISE_FLOOR_USD", "0")  # every opportunity, however small
    out = CliRunner().invoke(build_app(), ["advise", "--since", "1d", "--format", "json"])
    assert out.exit_code == 0, out.output
    found = {(o["kind"], tuple(sorted(o["scope"].items()))): o for o in json.loads(out.stdout)}
    # A one-day range: the monthly saving is 30 times the day's, exactly.
    failed_chat = [c for c in calls if c.e.feature == "chat" and c.e.status != "ok"]
    retries = found[("fix_retries", (("feature", "chat"), ("model", "gpt-4o"), ("tenant", "acme")))]
    assert retries["monthly_saving_nanos"] == 30 * sum(c.cost for c in failed_chat)
    embeds = sorted((c for c in calls if c.e.operation == "embedding"), key=lambda c: c.e.occurred_at)
    repeat_cost = sum(
        c.cost for n, c in enumerate(embeds) if c.e.content_hash in {x.e.content_hash for x in embeds[:n]}
    )
    assert (
        found[("stop_reembedding", (("feature", "index"), ("tenant", "acme")))]["monthly_saving_nanos"]
        == 30 * repeat_cost
    )
    nightly = [c for c in calls if c.e.feature == "nightly"]
    batch = found[("batch_background", (("feature", "nightly"), ("model", "gpt-4o-mini"), ("tenant", "acme")))]
    assert batch["monthly_saving_nanos"] == 30 * sum(c.cost - (list_price(c.e, tier="batch") or 0) for c in nightly)
    assert batch["confidence"] == "high"
    classify = [c for c in calls if c.e.feature == "classify"]
    route = found[("route_smaller_model", (("feature", "classify"), ("model", "gpt-4o"), ("tenant", "acme")))]
    assert route["monthly_saving_nanos"] == 30 * sum(c.cost - (list_price(c.e, "gpt-4o-mini") or 0) for c in classify)
    assert route["caveat"] and route["evidence"]["cheaper_model"] == "gpt-4o-mini"
    capless = found[("set_max_tokens", (("feature", "summarize"), ("model", "gpt-4o-mini"), ("tenant", "acme")))]
    summaries = [c for c in calls if c.e.feature == "summarize"]
    outputs = sorted(c.e.output_tokens for c in summaries)
    p99 = outputs[int(0.99 * len(outputs))]
    excess = sum(output_price(c.e, max(c.e.output_tokens - p99, 0)) for c in summaries)
    assert excess > 0 and capless["monthly_saving_nanos"] == 30 * excess
    assert capless["confidence"] == "low" and capless["caveat"]
    staging = [c for c in calls if c.e.env == "staging"]
    assert found[("cap_nonprod", (("tenant", "acme"),))]["monthly_saving_nanos"] == 30 * sum(c.cost for c in staging)
    savings = [o["monthly_saving_nanos"] for o in json.loads(out.stdout)]
    assert savings == sorted(savings, reverse=True)
    monkeypatch.delenv("COSTPLANE_REPORTS_ADVISE_FLOOR_USD")  # the default floor: $1 a month
    floored = CliRunner().invoke(build_app(), ["advise", "--since", "1d", "--format", "json"])
    kept = json.loads(floored.stdout)
    assert kept == [o for o in json.loads(out.stdout) if o["monthly_saving_nanos"] >= 10**9]


def test_top_keeps_the_whole_ranges_totals(loaded: tuple[Any, str, list[Call]]) -> None:
    every = report(loaded, "leaks")
    first = report(loaded, "leaks", top=1)
    assert len(first) == 2 and first[-1] == every[-1]  # the overall row is the whole range, not the rows kept
    client, database, _ = loaded
    whole = run_report(client, ReportOptions.parse("environments", since="1d", now=NOW), database).reading
    top = run_report(client, ReportOptions.parse("environments", since="1d", now=NOW, top=1), database).reading
    assert whole == top  # the reading's non-production total does not depend on the rows shown
