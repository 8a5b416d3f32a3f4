"""Reports over a month of history: each report's p50 beside a plain raw-table GROUP BY of the same question.

``python -m bench.bench_reports [--events 10000000] [--days 30] [--tenants 20] [--dir PATH] [--keep]`` writes
synthetic usage events spread over the last ``--days`` days straight into embedded chDB through the sink's own
writer (raw rows, both rollup families, seen marks), then times every report over the whole range, each beside
its floor: the same question asked of the raw table with one plain ``GROUP BY`` (no rollups, no shares, no
percentile of whole requests unless the report has one). Targets: ≤ 0.5 s p50 for reports answered from rollups,
≤ 3 s p50 for those that need raw events. ``--keep`` reuses a directory a previous run filled.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import write_section
from costplane.config import ClickHouseSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.pricing.ledger import ledger_amounts
from costplane.publisher.event import UsageEvent
from costplane.reports.definitions import REPORTS
from costplane.reports.options import ReportOptions
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.processor import Pending
from costplane.streams.sink.query import run_report
from costplane.streams.sink.writer import BatchWriter

DATABASE = "bench_reports"
BATCH = 100_000

#: Per feature: team, operation, the models it uses, whether it keeps sessions, its system prompt size.
FEATURES: tuple[tuple[str, str, str, tuple[tuple[str, str], ...], bool, int], ...] = (
    ("chat", "assistant", "chat", (("openai", "gpt-4o"), ("openai", "gpt-4o-mini")), True, 1800),
    ("search", "search", "chat", (("openai", "gpt-4o-mini"),), False, 600),
    ("extract", "data", "chat", (("anthropic", "claude-3-5-sonnet-20241022"),), False, 1200),
    ("summarize", "data", "chat", (("anthropic", "claude-3-5-haiku-20241022"),), False, 400),
    ("index", "platform", "embedding", (("openai", "text-embedding-3-small"),), False, 0),
    ("agent", "assistant", "chat", (("openai", "o3-mini"), ("acme-labs", "internal-llm-7")), True, 2500),
)
ENVS = ("prod",) * 17 + ("staging", "staging", "dev")
PLANS = ("free",) * 14 + ("pro",) * 5 + ("enterprise",)


def generate(n: int, days: int, tenants: int, now: datetime, seed: int = 7) -> Iterator[UsageEvent]:
    """Events spread evenly over ``[now - days, now)``: requests with occasional retries, sessions whose prompt
    grows by turn, users on plans, a staging and a dev share, a batch-tier share and one unpriced model."""
    rng = random.Random(seed)
    start_ms = int((now - timedelta(days=days)).timestamp() * 1000)
    span_ms = days * 86_400_000
    users = [[(f"u{t}-{u}", rng.choice(PLANS)) for u in range(2000)] for t in range(tenants)]
    made = 0
    request = 0
    while made < n:
        request += 1
        t = rng.randrange(tenants)
        feature, team, operation, models, sessions, system = FEATURES[rng.randrange(len(FEATURES))]
        provider, model = models[rng.randrange(len(models))]
        user, plan = users[t][int(rng.paretovariate(1.2)) % 2000]
        at = start_ms + made * span_ms // n
        turn = 1 + int(rng.expovariate(0.25)) if sessions else None
        prompt = (system + 400 + 350 * ((turn or 1) - 1)) if operation == "chat" else 900
        cached = min(prompt // 2, system) if turn and turn > 1 and rng.random() < 0.6 else 0
        env = ENVS[rng.randrange(len(ENVS))]
        attempts = 1 + (rng.random() < 0.05) + (rng.random() < 0.01)
        for attempt in range(1, attempts + 1):
            failed = attempt < attempts
            yield UsageEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                occurred_at=at + attempt,
                tenant=f"tenant-{t:02d}",
                provider=provider,
                model=model,
                request_id=f"r{request}",
                attempt=attempt,
                status=rng.choice(("invalid_output", "rate_limited", "timeout")) if failed else "ok",
                input_tokens=prompt - cached,
                cached_input_tokens=cached,
                output_tokens=0 if operation == "embedding" else rng.randrange(20, 900),
                operation=operation,
                service_tier="batch" if feature == "summarize" and rng.random() < 0.3 else None,
                user_id=user,
                team=team,
                feature=feature,
                env=env,
                plan=plan,
                session_id=f"s{t}-{user}-{request // 20}" if sessions else None,
                turn=turn,
                system_prompt_tokens=system or None,
                max_tokens=1024 if rng.random() < 0.5 else None,
                result_cache_hit=True if feature == "search" and rng.random() < 0.05 else None,
            )
            made += 1
            if made >= n:
                return


def fill(client: Any, n: int, days: int, tenants: int, now: datetime) -> float:
    """Write ``n`` events through the sink's writer (as the sink does after its dedup filter); returns seconds."""
    catalog = default_catalog()
    writer = BatchWriter(client, DATABASE)
    began = time.perf_counter()
    batch: list[Pending] = []

    def flush() -> None:
        batch_id = uuid.uuid4().hex
        rows = writer.insert(batch, batch_id)
        writer.mark_seen(batch_id, rows)
        batch.clear()

    for offset, event in enumerate(generate(n, days, tenants, now), start=1):
        cost = catalog.price_event(event)
        priced = PricedEvent(event, 0 if event.result_cache_hit else cost.cost_nanos, cost.price_version, cost.unpriced)
        batch.append(Pending(priced, offset % 6, offset, ledger_amounts(catalog, event)))
        if len(batch) >= BATCH:
            flush()
            print(f"  {offset:,} events written ({time.perf_counter() - began:.0f} s)", flush=True)
    if batch:
        flush()
    return time.perf_counter() - began


#: The floor of each report: the same question as one plain GROUP BY over the raw table.
FLOORS: dict[str, str] = {
    "spend": "SELECT tenant, countIf(attempt = 1), count(), countIf(status != 'ok'), sum(input_tokens), "
    "sum(output_tokens), sum(cost_nanos) FROM {db}.usage_events WHERE occurred_at >= {since} GROUP BY tenant",
    "requests": "SELECT f, count(), avg(c), quantileExact(0.5)(c), quantileExact(0.95)(c), max(c) FROM "
    "(SELECT argMin(feature, attempt) AS f, sum(cost_nanos) AS c FROM {db}.usage_events "
    "WHERE occurred_at >= {since} GROUP BY tenant, request_id) GROUP BY f",
    "users": "SELECT tenant, plan, uniqExact(user_id), sum(cost_nanos) FROM {db}.usage_events "
    "WHERE occurred_at >= {since} GROUP BY tenant, plan",
    "retries": "SELECT feature, model, countIf(attempt = 1), countIf(attempt = 2), countIf(status != 'ok'), "
    "sumIf(cost_nanos, status != 'ok') FROM {db}.usage_events WHERE occurred_at >= {since} "
    "GROUP BY feature, model",
    "caching": "SELECT feature, model, sum(input_tokens + cached_input_tokens), sum(cached_input_tokens), "
    "sum(cache_saved_nanos), sum(prefix_cache_saving_nanos) FROM {db}.usage_events "
    "WHERE occurred_at >= {since} GROUP BY feature, model",
    "context": "SELECT feature, turn, countIf(attempt = 1), avg(input_tokens + cached_input_tokens), "
    "sum(cost_nanos) FROM {db}.usage_events WHERE occurred_at >= {since} AND session_id IS NOT NULL "
    "GROUP BY feature, turn",
    "system-prompt": "SELECT feature, sum(system_prompt_tokens), sum(input_tokens + cached_input_tokens), "
    "sum(system_prompt_cost_nanos) FROM {db}.usage_events WHERE occurred_at >= {since} "
    "GROUP BY feature",
    "environments": "SELECT env, count(), sum(cost_nanos) FROM {db}.usage_events WHERE occurred_at >= {since} "
    "GROUP BY env",
    "unpriced": "SELECT provider, model, count(), min(occurred_at), max(occurred_at) FROM {db}.usage_events "
    "WHERE occurred_at >= {since} AND unpriced GROUP BY provider, model",
    "chargeback": "SELECT team, sum(cost_nanos) FROM {db}.usage_events WHERE occurred_at >= {since} GROUP BY team",
}


def timed(call: Callable[[], Any], rounds: int) -> float:
    """Median seconds of ``rounds`` calls after one warm-up call."""
    call()
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/costplane-bench-reports"))
    parser.add_argument("--keep", action="store_true", help="reuse the data a previous run wrote to --dir")
    args = parser.parse_args()

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    if not args.keep and args.dir.exists():
        shutil.rmtree(args.dir)
    settings = load_settings(ClickHouseSettings, chdb_path=args.dir, database=DATABASE)
    client = open_client(settings)
    migrate(client, DATABASE)
    have = int(client.query(f"SELECT count() FROM {DATABASE}.usage_events").result_rows[0][0])
    fill_s = None
    if have < args.events:
        print(f"writing {args.events:,} events over {args.days} days for {args.tenants} tenants …", flush=True)
        fill_s = fill(client, args.events - have, args.days, args.tenants, now)
        client.command(f"OPTIMIZE TABLE {DATABASE}.rollup_spend_day FINAL")
    rows = {
        t: int(client.query(f"SELECT count() FROM {DATABASE}.{t}").result_rows[0][0])
        for t in (
            "usage_events",
            "rollup_spend_day",
            "rollup_spend_hour",
            "rollup_spend_minute",
            "rollup_users_day",
            "rollup_users_hour",
            "rollup_users_minute",
        )
    }
    first = client.query(f"SELECT min(occurred_at) FROM {DATABASE}.usage_events").result_rows[0][0]
    since = (first.replace(tzinfo=UTC) if first.tzinfo is None else first).replace(second=0, microsecond=0)
    since_sql = f"toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"

    table = [
        "| report | reads | p50 | floor: raw GROUP BY (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in REPORTS:
        if name not in FLOORS:  # the savings reports have no target; this bench times the attribution reports
            continue
        options = ReportOptions.parse(name, since=since.isoformat(), now=now + timedelta(minutes=1))
        result = run_report(client, options, DATABASE)
        seconds = timed(lambda o=options: run_report(client, o, DATABASE), args.rounds)
        floor = timed(lambda n=name: client.query(FLOORS[n].format(db=DATABASE, since=since_sql)), args.rounds)
        raw = result.source.startswith("raw")
        target = 3.0 if raw else 0.5
        table.append(
            f"| `{name}` (by {', '.join(result.by)}) | {'raw events' if raw else 'rollups'} | "
            f"{seconds * 1000:,.0f} ms | {floor * 1000:,.0f} ms | {seconds / floor:.2f}× | "
            f"≤ {target:g} s | {'yes' if seconds <= target else '**no**'} |"
        )
        print(table[-1], flush=True)

    sizes = ", ".join(f"`{t}` {n:,}" for t, n in rows.items())
    filled = f" Writing them through the sink's writer took {fill_s:,.0f} s." if fill_s else ""
    command = f"python -m bench.bench_reports --events {args.events} --days {args.days} --tenants {args.tenants}"
    body = f"""Command: `{command}`
(embedded chDB in `{args.dir}`, no services needed). {rows["usage_events"]:,} usage events over the last
{args.days} days for {args.tenants} tenants (2 000 users each, six features on seven models of which three the
shipped catalog does not price, retries, sessions, a staging and a dev share), written straight into ClickHouse
through the sink's `BatchWriter` (raw rows, both rollup families, seen marks).{filled} Rows: {sizes}.

Each report runs over the whole range with its default grouping (median of {args.rounds} after a warm-up, through
`run_report`, the function the CLI and the worker's API call). The floor is the same question asked of the raw
table with one plain `GROUP BY`, in the same run.

{chr(10).join(table)}
"""
    write_section("Reports", body)


if __name__ == "__main__":
    main()
