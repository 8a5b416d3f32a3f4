"""Every attribution report on a dataset with known answers, through the real publisher, Kafka and the worker.

The dataset holds retries with failed attempts, cache reads and writes, sessions whose prompts grow turn by turn,
system prompts above and below the cacheable 1 024 tokens, result-cache hits, several environments, teams and
plans, untagged spend and an unpriced model. Each expected number is computed here from the events and the
catalog's unit prices with Decimal and Fraction arithmetic (never by the report code), and every report's JSON
must equal it exactly, in integer nano-USD.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import ClickHouseSettings, KafkaSettings, PublisherSettings, RedisSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.event import TOKEN_BUCKETS, UsageEvent
from costplane.publisher.publisher import UsagePublisher
from costplane.reports.focus import FOCUS_COLUMNS
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.slow]

HOUR = 3_600_000
NANO = Decimal(10) ** 9


def _half_even(value: Decimal | Fraction) -> int:
    if isinstance(value, Fraction):
        value = Decimal(value.numerator) / Decimal(value.denominator)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _usd(nanos: int) -> str:
    sign = "-" if nanos < 0 else ""
    return f"{sign}{abs(nanos) // 10**9}.{abs(nanos) % 10**9:09d}"


@dataclass
class Truth:
    """One event and what it cost, worked out from the catalog's unit prices."""

    e: UsageEvent
    cost: int
    unpriced: bool
    prompt: int
    input_cost: int
    cache_saved: int
    system_cost: int
    prefix_tokens: int
    prefix_cost: int
    prefix_saving: int
    avoided: int

    @property
    def failed(self) -> bool:
        return self.e.status != "ok"

    @property
    def tokens(self) -> int:
        return sum(getattr(self.e, b) for b in TOKEN_BUCKETS)


def truth_of(e: UsageEvent) -> Truth:
    prompt = e.input_tokens + e.cached_input_tokens + e.cache_write_tokens
    rates = default_catalog().explain(
        e.provider, e.model, prompt_tokens=prompt, service_tier=e.service_tier, occurred_at_ms=e.occurred_at
    )
    if rates is None:
        return Truth(e, 0, True, prompt, 0, 0, 0, 0, 0, 0, 0)
    p = {name: rate.usd for name, rate in rates.items()}
    prompt_usd = (
        e.input_tokens * p["input"]
        + e.cached_input_tokens * p["cached_input"]
        + e.cache_write_tokens * p["cache_write"]
    )
    full = prompt_usd + e.output_tokens * p["output"] + e.reasoning_tokens * p["reasoning"]
    if e.result_cache_hit:
        return Truth(e, 0, False, prompt, 0, 0, 0, 0, 0, 0, _half_even(full * NANO))
    system = e.system_prompt_tokens or 0
    prefix = 0
    if system >= 1024:
        prefix = min(max(system - e.cached_input_tokens - e.cache_write_tokens, 0), e.input_tokens)
    return Truth(
        e,
        _half_even(full * NANO),
        False,
        prompt,
        _half_even(prompt_usd * NANO),
        _half_even(e.cached_input_tokens * (p["input"] - p["cached_input"]) * NANO),
        _half_even(prompt_usd * NANO * min(system, prompt) / prompt) if prompt else 0,
        prefix,
        _half_even(prefix * p["input"] * NANO),
        _half_even(prefix * (p["input"] - p["cached_input"]) * NANO),
        0,
    )


def dataset(now_ms: int) -> list[UsageEvent]:
    """The story, in event time over the last few hours (the worker takes events up to a day old)."""
    out: list[UsageEvent] = []
    base = now_ms - 5 * HOUR
    n = 0

    def add(**kw: Any) -> None:
        nonlocal n
        n += 1
        fields: dict[str, Any] = dict(
            event_id=str(uuid.uuid4()),
            occurred_at=base + n * 37_000,
            tenant="acme",
            provider="openai",
            request_id=f"req-{n}",
            attempt=1,
            status="ok",
        )
        fields.update(kw)
        out.append(UsageEvent(**fields))

    # Chat sessions whose prompt grows each turn; turn 1 writes the cache, later turns read it. Even sessions carry
    # a 1 500-token system prompt (cacheable), odd ones 400 (too short to cache).
    for s in range(12):
        system = 1500 if s % 2 == 0 else 400
        for turn in (1, 2, 3):
            prompt = 2000 + 900 * (turn - 1) + 10 * s
            cached = 0 if turn == 1 else 1024
            write = 1024 if turn == 1 and s % 3 == 0 else 0
            add(
                model="gpt-4o",
                feature="chat",
                team="search",
                env="prod",
                plan="pro" if s < 6 else "free",
                user_id=f"u{s % 4}",
                session_id=f"sess-{s}",
                turn=turn,
                system_prompt_tokens=system,
                input_tokens=prompt - cached - write,
                cached_input_tokens=cached,
                cache_write_tokens=write,
                output_tokens=150 + 5 * s,
                request_id=f"chat-{s}-{turn}",
                operation="chat",
            )
    # Extraction with malformed-JSON retries: a third of the requests fail twice before they succeed, a third once.
    for r in range(9):
        attempts = [
            (("invalid_output", 700), ("rate_limited", 0), ("ok", 300)),
            (("timeout", 0), ("ok", 310)),
            (("ok", 320),),
        ][r % 3]
        for a, (status, output) in enumerate(attempts, start=1):
            add(
                model="gpt-4o-mini",
                feature="extract",
                team="data",
                env="prod",
                plan="pro",
                user_id=f"u{r % 3}",
                request_id=f"extract-{r}",
                attempt=a,
                status=status,
                input_tokens=1200 if output else 0,
                output_tokens=output,
                system_prompt_tokens=300,
            )
    # A staging load test nobody tagged with a team.
    for _ in range(8):
        add(model="gpt-4o-mini", feature="loadtest", env="staging", input_tokens=5000, output_tokens=800)
    # Answers served from the app's own result cache: cost nothing, the saving is recorded.
    for i in range(4):
        add(
            model="gpt-4o",
            feature="faq",
            team="support",
            env="prod",
            plan="free",
            user_id=f"u{i}",
            input_tokens=900,
            output_tokens=200,
            result_cache_hit=True,
        )
    # A model the catalog does not price.
    for _ in range(5):
        add(
            provider="acme-labs",
            model="internal-llm-7",
            feature="chat",
            team="search",
            env="prod",
            input_tokens=3000,
            output_tokens=400,
        )
    # Another tenant: embeddings on a free plan, no env.
    for i in range(6):
        add(
            tenant="globex",
            model="text-embedding-3-small",
            feature="index",
            team="platform",
            plan="free",
            user_id=f"g{i % 2}",
            operation="embedding",
            input_tokens=8000 + i,
        )
    return out


# -- the worker and the reports ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, dev_stack: dict[str, Any]
) -> Iterator[tuple[WorkerProcess, list[Truth]]]:
    tmp = tmp_path_factory.mktemp("reports-e2e")
    kafka = load_settings(
        KafkaSettings, bootstrap_servers=dev_stack["kafka"]["bootstrap"], topic_prefix=f"t{uuid.uuid4().hex[:10]}"
    )
    redis_settings = load_settings(RedisSettings, url=dev_stack["redis"]["url"], key_prefix=f"t{uuid.uuid4().hex[:8]}")
    clickhouse = load_settings(ClickHouseSettings, chdb_path=tmp / "chdb", database=f"t{uuid.uuid4().hex[:10]}")
    from costplane.config import WorkerSettings

    create_topics(kafka, load_settings(WorkerSettings))
    worker = WorkerProcess(worker_env(kafka, redis_settings, clickhouse), tmp / "worker.log", role="all").start()
    try:
        worker.wait_ready(90)
        events = dataset(int(time.time() * 1000))
        publisher = UsagePublisher(kafka, load_settings(PublisherSettings, spool_dir=tmp / "spool"))
        try:
            assert all(publisher.emit(e) for e in events)
            assert publisher.emit(events[5])  # a duplicate: counted once
            assert publisher.flush(30) == 0
        finally:
            publisher.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = api(worker, "spend", by=["tenant"], since="1d")["rows"]
            if sum(r["attempts"] for r in rows) >= len(events):
                break
            time.sleep(0.5)
        yield worker, [truth_of(e) for e in events]
    finally:
        worker.stop()


def api(worker: WorkerProcess, report: str, **kw: Any) -> dict[str, Any]:
    status, answer = worker.get("/api/report?" + ReportOptions.parse(report, **kw).to_query_string(), 30)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def rows_of(worker: WorkerProcess, report: str, **kw: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api(worker, report, since="1d", **kw)["rows"]
    return rows


def group(truths: list[Truth], key: Callable[[Truth], tuple[Any, ...]]) -> dict[tuple[Any, ...], list[Truth]]:
    groups: dict[tuple[Any, ...], list[Truth]] = defaultdict(list)
    for t in truths:
        groups[key(t)].append(t)
    return groups


def money(name: str, nanos: int) -> dict[str, Any]:
    """A ``*_nanos`` field with its exact ``*_usd`` twin (as every report row carries them)."""
    return {name: nanos, name.removesuffix("_nanos") + "_usd": _usd(nanos)}


def keyed(rows: list[dict[str, Any]], *dims: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[d] for d in dims): r for r in rows}


def same(got: dict[tuple[Any, ...], dict[str, Any]], want: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    """Equal rows, with the JSON keys in the documented order (a public interface)."""
    assert got == want
    assert all(list(got[k]) == list(want[k]) for k in want)


# -- the reports -------------------------------------------------------------------------------------------------


def test_spend_counts_requests_attempts_failures_and_unpriced(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    rows = rows_of(worker, "spend", by=["tenant,feature"])
    want = {}
    for (tenant, feature), ts in group(truths, lambda t: (t.e.tenant, t.e.feature)).items():
        row: dict[str, Any] = {
            "tenant": tenant,
            "feature": feature,
            "requests": sum(t.e.attempt == 1 for t in ts),
            "attempts": len(ts),
            "retries": sum(t.e.attempt > 1 for t in ts),
            "failed_attempts": sum(t.failed for t in ts),
            **money("failed_cost_nanos", sum(t.cost for t in ts if t.failed)),
            "unpriced_attempts": sum(t.unpriced for t in ts),
        }
        row.update({b: sum(getattr(t.e, b) for t in ts) for b in TOKEN_BUCKETS})
        row.update(money("cost_nanos", sum(t.cost for t in ts)))
        want[(tenant, feature)] = row
    same(keyed(rows, "tenant", "feature"), want)
    assert [r["cost_nanos"] for r in rows] == sorted((r["cost_nanos"] for r in rows), reverse=True)
    assert list(rows[0]) == list(next(iter(want.values())))  # the pinned key order


def test_requests_with_all_their_attempts(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    per_request = group(truths, lambda t: (t.e.tenant, t.e.request_id))
    by_feature: dict[Any, list[list[Truth]]] = defaultdict(list)
    for attempts in per_request.values():
        first = min(attempts, key=lambda t: t.e.attempt)
        by_feature[first.e.feature].append(attempts)
    rows = keyed(rows_of(worker, "requests"), "feature")
    assert set(rows) == {(f,) for f in by_feature}
    for feature, requests in by_feature.items():
        costs = sorted(sum(t.cost for t in r) for r in requests)
        n = len(costs)
        assert rows[(feature,)] == {
            "feature": feature,
            "requests": n,
            **money("avg_cost_nanos", _half_even(Fraction(sum(costs), n))),
            **money("p50_cost_nanos", costs[int(0.5 * n)]),
            **money("p95_cost_nanos", costs[int(0.95 * n)]),
            **money("max_cost_nanos", costs[-1]),
            "avg_attempts": sum(len(r) for r in requests) / n,
        }, feature
        assert list(rows[(feature,)]) == [
            "feature",
            "requests",
            "avg_cost_nanos",
            "avg_cost_usd",
            "p50_cost_nanos",
            "p50_cost_usd",
            "p95_cost_nanos",
            "p95_cost_usd",
            "max_cost_nanos",
            "max_cost_usd",
            "avg_attempts",
        ]
    listed = rows_of(worker, "requests", by=["request_id"], top=3)
    dearest = sorted(per_request.items(), key=lambda kv: (-sum(t.cost for t in kv[1]), kv[0]))[:3]
    assert [r["request_id"] for r in listed] == [key[1] for key, _ in dearest]
    (tenant, request_id), attempts = dearest[0]
    assert listed[0] == {
        "request_id": request_id,
        "tenant": tenant,
        "feature": attempts[0].e.feature,
        "attempts": len(attempts),
        **money("cost_nanos", sum(t.cost for t in attempts)),
        **money("failed_cost_nanos", sum(t.cost for t in attempts if t.failed)),
        "first_at": listed[0]["first_at"],
        "last_at": listed[0]["last_at"],
        "models": sorted({t.e.model for t in attempts}),
    }


def test_users_per_plan_and_top_users(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    tenant_cost = {k[0]: sum(t.cost for t in ts) for k, ts in group(truths, lambda t: (t.e.tenant,)).items()}
    with_user = [t for t in truths if t.e.user_id]
    rows = keyed(rows_of(worker, "users"), "tenant", "plan")
    want = {}
    for (tenant, plan), ts in group(with_user, lambda t: (t.e.tenant, t.e.plan)).items():
        users, cost = len({t.e.user_id for t in ts}), sum(t.cost for t in ts)
        want[(tenant, plan)] = {
            "tenant": tenant,
            "plan": plan,
            "users": users,
            "requests": sum(t.e.attempt == 1 for t in ts),
            **money("cost_nanos", cost),
            **money("avg_cost_per_user_nanos", _half_even(Fraction(cost, users))),
            "share_of_tenant": cost / tenant_cost[tenant],
        }
    same(rows, want)
    top = rows_of(worker, "users", by=["user"], tenant="acme", top=2)
    per_user = {
        k: sum(t.cost for t in ts)
        for k, ts in group([t for t in with_user if t.e.tenant == "acme"], lambda t: (t.e.user_id,)).items()
    }
    best = sorted(per_user.items(), key=lambda kv: -kv[1])[:2]
    assert [(r["user"], r["cost_nanos"], r["share_of_tenant"]) for r in top] == [
        (u, c, c / tenant_cost["acme"]) for (u,), c in best
    ]


def test_retries_waste(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    rows = keyed(rows_of(worker, "retries"), "feature", "model")
    want = {}
    for key, ts in group(truths, lambda t: (t.e.feature, t.e.model)).items():
        requests, retried = sum(t.e.attempt == 1 for t in ts), sum(t.e.attempt == 2 for t in ts)
        want[key] = {
            "feature": key[0],
            "model": key[1],
            "requests": requests,
            "retried_requests": retried,
            "retry_rate": retried / requests,
            "failed_attempts": sum(t.failed for t in ts),
            "wasted_tokens": sum(t.tokens for t in ts if t.failed),
            **money("wasted_cost_nanos", sum(t.cost for t in ts if t.failed)),
        }
    same(rows, want)
    assert want[("extract", "gpt-4o-mini")]["wasted_cost_nanos"] > 0


def test_caching_savings_and_what_caching_would_save(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    rows = keyed(rows_of(worker, "caching"), "feature", "model")
    want = {}
    for key, ts in group(truths, lambda t: (t.e.feature, t.e.model)).items():
        prompt, cached = sum(t.prompt for t in ts), sum(t.e.cached_input_tokens for t in ts)
        want[key] = {
            "feature": key[0],
            "model": key[1],
            "prompt_tokens": prompt,
            "cached_input_tokens": cached,
            "hit_rate": cached / prompt,
            **money("saved_nanos", sum(t.cache_saved for t in ts)),
            "uncached_prefix_tokens": sum(t.prefix_tokens for t in ts),
            **money("uncached_prefix_cost_nanos", sum(t.prefix_cost for t in ts)),
            **money("would_save_nanos", sum(t.prefix_saving for t in ts)),
            "result_cache_hits": sum(bool(t.e.result_cache_hit) for t in ts),
            **money("result_cache_avoided_nanos", sum(t.avoided for t in ts)),
        }
    same(rows, want)
    chat = want[("chat", "gpt-4o")]
    assert chat["saved_nanos"] > 0 and chat["would_save_nanos"] > 0
    assert want[("faq", "gpt-4o")]["result_cache_hits"] == 4


def test_context_growth_and_history_cost(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    sessions = [t for t in truths if t.e.session_id and t.e.turn]
    base = {
        k: min(ts, key=lambda t: (t.e.turn, t.e.attempt)).prompt
        for k, ts in group(sessions, lambda t: (t.e.tenant, t.e.session_id)).items()
    }
    rows = rows_of(worker, "context")
    want = []
    for (feature,), ts in group(sessions, lambda t: (t.e.feature,)).items():
        turns = group(ts, lambda t: (t.e.turn,))
        per_turn = []
        for (turn,), tt in sorted(turns.items()):
            firsts = [t for t in tt if t.e.attempt == 1]
            history = sum(
                _half_even(Fraction(t.input_cost * max(t.prompt - base[(t.e.tenant, t.e.session_id)], 0), t.prompt))
                for t in tt
            )
            per_turn.append(
                {
                    "feature": feature,
                    "turn": str(turn),
                    "requests": len(firsts),
                    "avg_input_tokens": sum(t.prompt for t in firsts) / len(firsts),
                    "p90_input_tokens": sorted(t.prompt for t in firsts)[int(0.9 * len(firsts))],
                    "avg_output_tokens": sum(t.e.output_tokens for t in firsts) / len(firsts),
                    **money("cost_nanos", sum(t.cost for t in tt)),
                    **money("history_cost_nanos", history),
                }
            )
        deep = [r for r in per_turn if r["requests"] >= 10]
        growth = deep[-1]["avg_input_tokens"] / per_turn[0]["avg_input_tokens"]
        want += [{**r, "growth": growth} for r in per_turn]
    assert rows == want and [list(r) for r in rows] == [list(w) for w in want]
    assert want[-1]["growth"] > 1 and sum(r["history_cost_nanos"] for r in want) > 0


def test_system_prompt_share_and_cost(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    rows = keyed(rows_of(worker, "system-prompt"), "feature")
    want = {}
    for (feature,), ts in group(truths, lambda t: (t.e.feature,)).items():
        system, prompt = sum(t.e.system_prompt_tokens or 0 for t in ts), sum(t.prompt for t in ts)
        want[(feature,)] = {
            "feature": feature,
            "system_prompt_tokens": system,
            "prompt_tokens": prompt,
            "share": system / prompt,
            **money("system_prompt_cost_nanos", sum(t.system_cost for t in ts)),
        }
    same(rows, want)


def test_environments_call_out_nonprod(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    total = sum(t.cost for t in truths)
    rows = keyed(rows_of(worker, "environments"), "env")
    want = {}
    for (env,), ts in group(truths, lambda t: (t.e.env,)).items():
        cost = sum(t.cost for t in ts)
        want[(env,)] = {
            "env": env,
            "attempts": len(ts),
            **money("cost_nanos", cost),
            "share": cost / total,
            "nonprod": env is not None and env not in ("prod", "production"),
        }
    same(rows, want)
    assert rows[("staging",)]["nonprod"] is True


def test_unpriced_models_are_listed(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    rows = rows_of(worker, "unpriced")
    unpriced = [t for t in truths if t.unpriced]
    assert len(rows) == 1
    row = rows[0]
    first = min(t.e.occurred_at for t in unpriced)
    last = max(t.e.occurred_at for t in unpriced)
    assert list(row) == ["provider", "model", "attempts", *TOKEN_BUCKETS, "tokens", "first_seen", "last_seen"]
    assert {k: v for k, v in row.items() if k not in ("first_seen", "last_seen")} == {
        "provider": "acme-labs",
        "model": "internal-llm-7",
        "attempts": len(unpriced),
        **{b: sum(getattr(t.e, b) for t in unpriced) for b in TOKEN_BUCKETS},
        "tokens": sum(t.tokens for t in unpriced),
    }
    from datetime import UTC, datetime

    assert datetime.fromisoformat(row["first_seen"]) == datetime.fromtimestamp(first / 1000, UTC)
    assert datetime.fromisoformat(row["last_seen"]) == datetime.fromtimestamp(last / 1000, UTC)


def test_chargeback_unallocated_proportional_and_focus(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, truths = loaded
    per_team = {k[0]: sum(t.cost for t in ts) for k, ts in group(truths, lambda t: (t.e.team,)).items()}
    grand = sum(per_team.values())
    shown = keyed(rows_of(worker, "chargeback"), "team")
    assert list(shown[(None,)]) == [
        "team",
        "cost_nanos",
        "cost_usd",
        "allocated_nanos",
        "allocated_usd",
        "total_nanos",
        "total_usd",
        "share",
        "unallocated",
    ]
    assert list(shown)[-1] == (None,)  # untagged spend comes last
    assert {k: (r["cost_nanos"], r["unallocated"], r["share"]) for k, r in shown.items()} == {
        (team,): (cost, team is None, cost / grand) for team, cost in per_team.items()
    }
    spread = rows_of(worker, "chargeback", allocate="proportional")
    tagged = {team: cost for team, cost in per_team.items() if team is not None}
    untagged = per_team[None]
    assert sum(r["total_nanos"] for r in spread) == grand and {r["team"] for r in spread} == set(tagged)
    for r in spread:
        exact = Fraction(untagged * tagged[r["team"]], sum(tagged.values()))
        assert abs(r["allocated_nanos"] - exact) < 1 and r["total_nanos"] == r["cost_nanos"] + r["allocated_nanos"]

    out = CliRunner().invoke(
        build_app(), ["report", "chargeback", "--since", "1d", "--format", "focus", "--api-url", worker.url]
    )
    assert out.exit_code == 0, out.output
    focus = list(csv.DictReader(io.StringIO(out.stdout)))
    assert focus and list(focus[0]) == list(FOCUS_COLUMNS)
    assert sum(Decimal(r["BilledCost"]) for r in focus) == Decimal(grand) / NANO
    assert {r["ResourceId"] for r in focus} == {t.e.model for t in truths}
    assert all(r["BillingCurrency"] == "USD" and r["ConsumedUnit"] == "Tokens" for r in focus)
    assert {json.loads(r["Tags"]).get("team") for r in focus} == set(per_team)


def test_cli_prints_the_same_json_csv_and_a_reading(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, _ = loaded
    runner = CliRunner()
    for report in ("spend", "retries", "caching", "users", "context", "environments"):
        args = ["report", report, "--since", "1d", "--api-url", worker.url]
        as_json = runner.invoke(build_app(), [*args, "--format", "json"])
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.stdout) == rows_of(worker, report)
        as_csv = runner.invoke(build_app(), [*args, "--format", "csv"])
        parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert as_csv.exit_code == 0 and len(parsed) == len(json.loads(as_json.stdout))
        assert list(parsed[0]) == list(json.loads(as_json.stdout)[0])  # the header is the JSON keys
        table = runner.invoke(build_app(), args)
        assert table.exit_code == 0 and api(worker, report, since="1d")["reading"].split(" ")[0] in table.stdout
    empty = runner.invoke(
        build_app(),
        [
            "report",
            "retries",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-02",
            "--api-url",
            worker.url,
            "--format",
            "json",
        ],
    )
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    empty_csv = runner.invoke(
        build_app(),
        [
            "report",
            "retries",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-02",
            "--api-url",
            worker.url,
            "--format",
            "csv",
        ],
    )
    assert empty_csv.exit_code == 0 and empty_csv.stdout.splitlines() == [
        "feature,model,requests,retried_requests,retry_rate,failed_attempts,wasted_tokens,wasted_cost_nanos,"
        "wasted_cost_usd"
    ]
    unknown = runner.invoke(build_app(), ["report", "spend", "--tenant", "nobody", "--api-url", worker.url])
    assert unknown.exit_code == 2 and "no tenant 'nobody'" in unknown.output


def test_raw_and_rollup_sources_agree(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    """A grouping no rollup keeps reads the raw events in the rollups' shape: the same numbers either way."""
    worker, _ = loaded
    by_rollup = api(worker, "spend", by=["tenant", "feature"], since="1d")
    by_raw = api(worker, "spend", by=["tenant", "feature", "attr.none"], since="1d")
    assert by_rollup["source"].startswith("rollup") and by_raw["source"].startswith("raw")
    assert [{k: v for k, v in r.items() if k != "attr.none"} for r in by_raw["rows"]] == by_rollup["rows"]


def test_bad_requests_are_400_with_a_reason(loaded: tuple[WorkerProcess, list[Truth]], tmp_path: Path) -> None:
    worker, _ = loaded
    status, body = worker.get("/api/report?report=spend&by=colour")
    assert status == 400 and "unknown dimension" in body["error"]
    status, body = worker.get("/api/report?report=nope")
    assert status == 400 and "unknown report" in body["error"]


def test_time_filters_match_the_rows_time_groupings_print(loaded: tuple[WorkerProcess, list[Truth]]) -> None:
    worker, _ = loaded
    hours = rows_of(worker, "spend", by=["hour"])
    busiest = max(hours, key=lambda r: r["attempts"])
    filtered = rows_of(worker, "spend", by=["tenant"], where=[f"hour={busiest['hour']}"])
    assert sum(r["attempts"] for r in filtered) == busiest["attempts"]
    assert sum(r["cost_nanos"] for r in filtered) == busiest["cost_nanos"]
