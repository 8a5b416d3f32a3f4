"""Detectors over per-minute windows, driven by an injected clock: each condition triggers, clears, and stays quiet
under normal noise or below its minimum volume."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from decimal import Decimal

import pytest

from costplane.budgets import Budget
from costplane.publisher.event import UsageEvent
from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors import MINUTE_MS, DetectorConfig, Detectors
from costplane.synthetic import Incident, TrafficShape, generate

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_ids = itertools.count()
NANOS_PER_TOKEN = {
    "gpt-4o-mini": 150,
    "gpt-4o": 2_500,
    "claude-haiku-4-5": 800,
    "claude-sonnet-4-5": 3_000,
    "text-embedding-3-small": 20,
}


def ev(
    at: int,
    *,
    tenant: str = "acme",
    feature: str = "chat",
    model: str = "gpt-4o",
    attempt: int = 1,
    status: str = "ok",
    request_id: str | None = None,
    user: str = "u1",
    input_tokens: int = 1000,
    cached: int = 0,
    output: int = 100,
    cost: int | None = None,
    unpriced: bool = False,
    session: str | None = None,
    turn: int | None = None,
) -> PricedEvent:
    e = UsageEvent(
        event_id=f"e{next(_ids)}",
        occurred_at=at,
        tenant=tenant,
        provider="openai",
        model=model,
        request_id=request_id or f"r{next(_ids)}",
        attempt=attempt,
        status=status,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        user_id=user,
        feature=feature,
        session_id=session,
        turn=turn,
    )
    tokens = input_tokens + cached + output
    return PricedEvent(e, 0 if unpriced else (cost if cost is not None else tokens * 1_000), "test", unpriced)


def price(events: Iterable[UsageEvent]) -> Iterator[PricedEvent]:
    for e in events:
        per = NANOS_PER_TOKEN.get(e.model, 1_000)  # a renamed synthetic model still gets a price
        yield PricedEvent(e, per * (e.input_tokens + e.output_tokens) + per // 10 * e.cached_input_tokens, "test")


def minute_traffic(minute: int, n: int, retries: int = 0, **kw: object) -> list[PricedEvent]:
    """``n`` attempts spread over one minute, the first ``retries`` of them retries that failed."""
    start = T0 + minute * MINUTE_MS
    out = []
    for i in range(n):
        retry = i < retries
        out.append(ev(start + i * (MINUTE_MS // n), attempt=2 if retry else 1, status="error" if retry else "ok", **kw))  # type: ignore[arg-type]
    return out


def run(det: Detectors, minutes: Iterable[tuple[int, list[PricedEvent]]]) -> dict[int, list[Finding]]:
    """Observe each minute's events, then evaluate just after it closed (grace passed); findings per minute."""
    out: dict[int, list[Finding]] = {}
    for minute, events in minutes:
        det.observe(events)
        out[minute] = det.evaluate(T0 + (minute + 1) * MINUTE_MS + 6_000)
    return out


def active(findings: Iterable[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind and f.active]


def test_retry_storm_triggers_then_clears() -> None:
    det = Detectors()
    plan = [
        (m, minute_traffic(m, 100, retries=1 if m < 10 or m > 12 else 30, user="u9" if 10 <= m <= 12 else "u1"))
        for m in range(20)
    ]
    by_minute = run(det, plan)
    assert all(not active(by_minute[m], "retry_storm") for m in range(10))
    storm = active(by_minute[10], "retry_storm")
    assert len(storm) == 1
    f = storm[0]
    assert f.dedup_key == "retry_storm|tenant=acme|feature=chat|model=gpt-4o"
    assert f.subject == {"tenant": "acme", "feature": "chat", "model": "gpt-4o"}
    assert f.numbers["retry_ratio"] == "0.3000" and f.numbers["retries"] == "30"
    assert f.numbers["wasted_tokens"] == str(30 * 1100) and f.numbers["wasted_usd"] == "0.033000000"
    assert f.severity == "critical" and f.runbook == "docs/runbook.md#retry-storm"
    assert f.contributors[0].dimension == "user_id" and f.contributors[0].value == "u9"
    assert (f.window_start_ms, f.window_end_ms) == (T0 + 10 * MINUTE_MS, T0 + 11 * MINUTE_MS)
    assert [len(active(by_minute[m], "retry_storm")) for m in (11, 12)] == [1, 1]
    cleared = [x for x in by_minute[13] if x.kind == "retry_storm"]
    assert len(cleared) == 1 and not cleared[0].active and cleared[0].dedup_key == f.dedup_key


def test_minimum_volume_and_minimum_retries_suppress() -> None:
    det = Detectors()
    by_minute = run(
        det,
        [
            (0, minute_traffic(0, 10, retries=5)),  # 50 % but only 10 attempts
            (1, minute_traffic(1, 40, retries=4)),
        ],
    )  # 10 % but only 4 retries
    assert not any(f.active for fs in by_minute.values() for f in fs)
    det = Detectors(configs={"acme": DetectorConfig(min_attempts=5, min_retries=1)})
    assert active(run(det, [(0, minute_traffic(0, 10, retries=5))])[0], "retry_storm")


def test_cost_spike_against_learnt_baseline_with_floor() -> None:
    det = Detectors()
    # 40 calls × 1100 tokens × 1000 nanos = $0.044/min baseline; the spike triples the prompt.
    plan = [(m, minute_traffic(m, 40, input_tokens=1000 if m < 15 or m > 16 else 5000)) for m in range(25)]
    by_minute = run(det, plan)
    assert all(not active(by_minute[m], "cost_spike") for m in range(15))
    spike = active(by_minute[15], "cost_spike")
    assert len(spike) == 1 and spike[0].numbers["baseline_usd"] == "0.044000000"
    assert spike[0].numbers["cost_usd"] == "0.204000000" and spike[0].runbook == "docs/runbook.md#cost-spike"
    assert active(by_minute[16], "cost_spike")
    assert [f.active for f in by_minute[17] if f.kind == "cost_spike"] == [False]
    # The same relative jump under the absolute floor is not worth a page.
    det = Detectors()
    small = run(det, [(m, minute_traffic(m, 40, input_tokens=10 if m < 15 else 100)) for m in range(17)])
    assert not any(active(fs, "cost_spike") for fs in small.values())


def test_token_spike_per_model() -> None:
    det = Detectors(DetectorConfig(token_spike_floor=50_000, spike_floor_nanos=10**12))
    plan = [(m, minute_traffic(m, 50, input_tokens=1000 if m != 12 else 4000)) for m in range(14)]
    by_minute = run(det, plan)
    spike = active(by_minute[12], "token_spike")
    assert [f.dedup_key for f in spike] == ["token_spike|tenant=acme|model=gpt-4o"]
    assert spike[0].numbers["tokens"] == str(50 * 4100) and spike[0].numbers["baseline_tokens"] == str(50 * 1100)
    assert not active(by_minute[12], "cost_spike")  # its floor was set out of reach


def test_cache_hit_rate_drop_only_where_it_used_to_be_higher() -> None:
    det = Detectors()
    plan = [
        (
            m,
            minute_traffic(
                m, 60, input_tokens=200 if m < 12 else 800, cached=800 if m < 12 else 200, feature="support"
            ),
        )
        for m in range(15)
    ]
    by_minute = run(det, plan)
    assert all(not active(by_minute[m], "cache_hit_drop") for m in range(12))
    drop = active(by_minute[12], "cache_hit_drop")
    assert len(drop) == 1 and drop[0].numbers["hit_rate"] == "0.2000"
    assert drop[0].numbers["baseline_hit_rate"] == "0.8000"
    # A feature that always caches 30 % is not "dropping".
    det = Detectors()
    low = run(det, [(m, minute_traffic(m, 60, input_tokens=700, cached=300)) for m in range(15)])
    assert not any(active(fs, "cache_hit_drop") for fs in low.values())


def test_runaway_request_and_growing_session() -> None:
    det = Detectors()
    events = [ev(T0 + i * 1000, request_id="loop-1", attempt=i + 1, status="error") for i in range(12)]
    growing = [
        ev(T0 + 30_000 + t * 1000, session="s1", turn=t, input_tokens=3000 * 2**t // 2, request_id=f"s{t}")
        for t in range(1, 9)
    ]
    by_minute = run(det, [(0, events + growing), (1, minute_traffic(1, 5))])
    loops = active(by_minute[0], "runaway_loop")
    keys = sorted(f.dedup_key for f in loops)
    assert keys == [
        "runaway_loop|tenant=acme|feature=chat|model=gpt-4o|request_id=loop-1",
        "runaway_loop|tenant=acme|feature=chat|session_id=s1",
    ]
    request = next(f for f in loops if "request_id" in f.subject)
    assert request.numbers["attempts"] == "12" and request.severity == "critical"
    assert not active(by_minute[1], "runaway_loop")
    assert len([f for f in by_minute[1] if f.kind == "runaway_loop"]) == 2  # both reported clearing
    # Ten attempts is the limit itself, not more than it; a session that grows then shrinks is fine.
    det = Detectors()
    ok = [ev(T0 + i, request_id="r", attempt=i + 1) for i in range(10)]
    wobble = [ev(T0 + t, session="s", turn=t, input_tokens=30_000 if t % 2 else 40_000) for t in range(1, 12)]
    assert not active(run(det, [(0, ok + wobble)])[0], "runaway_loop")


def test_user_share_of_the_daily_budget() -> None:
    daily = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="100")
    det = Detectors(budgets=[daily])
    heavy = [ev(T0 + i, user="whale", cost=150_000_000) for i in range(10)]  # $1.50 = 1.5 %
    light = [ev(T0 + i, user="minnow", cost=90_000_000) for i in range(10)]  # $0.90 = 0.9 %
    findings = run(det, [(0, heavy + light)])[0]
    share = active(findings, "user_share")
    assert [f.subject["user_id"] for f in share] == ["whale"]
    assert share[0].numbers["share"] == "0.0150" and share[0].numbers["budget_id"] == "acme-day"
    # Still over the share next minute; cleared once the day (in the budget's timezone) is over.
    later = run(det, [(5, minute_traffic(5, 1, user="minnow"))])[5]
    assert active(later, "user_share")
    next_day = 24 * 60
    cleared = run(det, [(next_day, minute_traffic(next_day, 1, user="whale"))])[next_day]
    assert not active(cleared, "user_share")
    assert [f.active for f in cleared if f.kind == "user_share"] == [False]


def test_unpriced_model_seen() -> None:
    det = Detectors()
    findings = run(det, [(0, [ev(T0, model="brand-new", unpriced=True), ev(T0 + 1, model="brand-new", unpriced=True)])])
    unpriced = active(findings[0], "unpriced_model")
    assert len(unpriced) == 1 and unpriced[0].numbers["attempts"] == "2"
    assert unpriced[0].dedup_key == "unpriced_model|tenant=acme|model=brand-new|provider=openai"


def test_month_forecast_crosses_before_month_end() -> None:
    monthly = Budget.from_cli("acme-month", scope="tenant=acme", period="month", limit_usd="1000")
    det = Detectors(budgets=[monthly])
    # 10 days into a 31-day month: $400 so far projects to $1240 > $1000.
    day10 = 10 * 24 * 60
    det.seed_month_spend("acme-month", "tenant=acme", 390 * 10**9, T0 + day10 * MINUTE_MS)
    findings = run(det, [(day10, minute_traffic(day10, 10, cost=1_000_000_000))])[day10]
    forecast = active(findings, "budget_forecast")
    assert len(forecast) == 1
    assert forecast[0].numbers["spent"] == str(400 * 10**9)
    assert int(forecast[0].numbers["projected"]) >= 1000 * 10**9
    assert "2026-01-11" <= forecast[0].numbers["crossing_date"] <= "2026-01-31"
    # At $200 after ten days the month ends near $620: nothing to report.
    det = Detectors(budgets=[monthly])
    det.seed_month_spend("acme-month", "tenant=acme", 190 * 10**9, T0 + day10 * MINUTE_MS)
    quiet = run(det, [(day10, minute_traffic(day10, 10, cost=1_000_000_000))])[day10]
    assert not active(quiet, "budget_forecast")


def test_thirty_minutes_of_noisy_steady_traffic_stay_quiet() -> None:
    det = Detectors()
    events = list(price(generate(30 * 60 * 30, seed=11, start_ms=T0, rate_per_s=30.0)))
    findings: list[Finding] = []
    for minute in range(30):
        start, end = T0 + minute * MINUTE_MS, T0 + (minute + 1) * MINUTE_MS
        det.observe(e for e in events if start <= e.event.occurred_at < end)
        findings += det.evaluate(end + 6_000)
    assert [f.dedup_key for f in findings if f.active] == []
    assert det.tracked()["subjects"] > 30  # the traffic really was judged per subject


def test_synthetic_storm_and_spike_are_found_in_the_same_traffic() -> None:
    storm = Incident("retry_storm", "acme", T0 + 15 * MINUTE_MS, T0 + 18 * MINUTE_MS, feature="chat", intensity=0.4)
    spike = Incident("spike", "globex", T0 + 15 * MINUTE_MS, T0 + 18 * MINUTE_MS, feature="chat", intensity=0.5)
    shape = TrafficShape(incidents=[storm, spike])
    events = list(price(generate(25 * 60 * 30, seed=3, start_ms=T0, rate_per_s=30.0, shape=shape)))
    det = Detectors()
    kinds: set[tuple[str, str]] = set()
    for minute in range(25):
        start, end = T0 + minute * MINUTE_MS, T0 + (minute + 1) * MINUTE_MS
        det.observe(e for e in events if start <= e.event.occurred_at < end)
        kinds |= {(f.kind, f.tenant) for f in det.evaluate(end + 6_000) if f.active}
    assert ("retry_storm", "acme") in kinds
    assert ("cost_spike", "globex") in kinds
    assert ("retry_storm", "globex") not in kinds and ("retry_storm", "initech") not in kinds


def test_idle_subjects_are_evicted_and_memory_stays_bounded() -> None:
    det = Detectors(DetectorConfig(idle_evict_minutes=5, request_ttl_ms=120_000, max_sessions=50))
    rng = random.Random(5)
    for minute in range(30):
        start = T0 + minute * MINUTE_MS
        batch = [
            ev(
                start + i,
                feature=f"f{minute}-{i % 3}",
                request_id=f"r{minute}-{i}",
                attempt=2,
                session=f"s{rng.randrange(10**6)}",
                turn=1,
            )
            for i in range(30)
        ]
        det.observe(batch)
        det.evaluate(start + MINUTE_MS + 6_000)
    sizes = det.tracked()
    assert sizes["subjects"] <= 3 * 7 and sizes["sessions"] <= 50 and sizes["requests"] <= 30 * 3
    assert sizes["open_minutes"] == 0


def test_late_events_count_in_the_oldest_open_minute_and_clock_waits_for_event_time() -> None:
    det = Detectors()
    det.observe(minute_traffic(0, 30))
    det.evaluate(T0 + 10 * MINUTE_MS)  # a backlog: event time (minute 0) decides, not the clock
    assert det.tracked()["open_minutes"] == 1
    det.observe(minute_traffic(1, 1))
    det.evaluate(T0 + 2 * MINUTE_MS + 6_000)  # live again: minutes 0 and 1 judged
    assert det.tracked()["open_minutes"] == 0
    det.observe(minute_traffic(0, 5, retries=5))  # late: folded into minute 2, the oldest still open
    det.observe(minute_traffic(2, 1))
    findings = det.evaluate(T0 + 3 * MINUTE_MS + 6_000)
    assert not active(findings, "retry_storm")  # 6 attempts in minute 2: below the minimum volume
    det.observe(minute_traffic(3, 1))
    det.evaluate(T0 + 60 * MINUTE_MS)  # a backlog again (events far behind the clock): minute 3 stays open
    assert det.tracked()["open_minutes"] == 1
    det.evaluate(T0 + 61 * MINUTE_MS)  # no new events since: idle, the clock decides
    assert det.tracked()["open_minutes"] == 0


def test_config_overrides_are_validated() -> None:
    cfg = DetectorConfig.from_mapping({"retry_ratio": "0.1", "dimensions": ["feature"], "min_attempts": 50})
    assert cfg.retry_ratio == Decimal("0.1") and cfg.dimensions == ("feature",) and cfg.min_attempts == 50
    for bad in ({"colour": 1}, {"ewma_alpha": "2"}):
        try:
            DetectorConfig.from_mapping(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_a_cleared_condition_is_reported_inactive_for_a_while_then_forgotten() -> None:
    det = Detectors(DetectorConfig(clear_report_minutes=3))
    plan = [(m, minute_traffic(m, 100, retries=30 if m == 0 else 0)) for m in range(8)]
    by_minute = run(det, plan)
    reported = {m: [f.active for f in by_minute[m] if f.kind == "retry_storm"] for m in range(8)}
    assert reported == {0: [True], 1: [False], 2: [False], 3: [False], 4: [], 5: [], 6: [], 7: []}
    assert det.tracked()["recent"] == 0


def test_per_tenant_thresholds_apply_to_that_tenant_only() -> None:
    det = Detectors()
    det.set_config("globex", DetectorConfig(retry_ratio=Decimal("0.5")))
    storm = minute_traffic(0, 100, retries=30) + minute_traffic(0, 100, retries=30, tenant="globex")
    findings = run(det, [(0, storm)])[0]
    assert [f.tenant for f in active(findings, "retry_storm")] == ["acme"]
    det.set_config("globex", None)
    findings = run(det, [(1, minute_traffic(1, 100, retries=30, tenant="globex"))])[1]
    assert [f.tenant for f in active(findings, "retry_storm")] == ["globex"]


def test_forgetting_a_tenant_after_a_rebalance_drops_only_its_state() -> None:
    det = Detectors(budgets=[Budget.from_cli("g-day", scope="tenant=globex", limit_usd="1")])
    run(
        det,
        [
            (
                0,
                minute_traffic(0, 100, retries=30)
                + minute_traffic(0, 30, retries=30, tenant="globex")
                + [ev(T0, tenant="globex", user="whale", cost=10**9)],
            )
        ],
    )
    assert det.tracked()["requests"] == 60 and det.tracked()["user_days"] == 2  # globex: u1 and whale
    det.observe(minute_traffic(1, 5, tenant="globex"))
    det.forget_tenant("globex")
    sizes = det.tracked()
    assert sizes["subjects"] == 1 and sizes["models"] == 1 and sizes["requests"] == 30 and sizes["user_days"] == 0
    findings = det.evaluate(T0 + 2 * MINUTE_MS + 6_000)
    assert {f.tenant for f in findings} == {"acme"}  # acme's storm reports clearing; globex is silent


def test_baselines_survive_a_restart_as_json() -> None:
    import json

    plan = [(m, minute_traffic(m, 40)) for m in range(12)]
    det = Detectors()
    run(det, plan)
    saved = json.loads(json.dumps(det.baselines()))
    restarted = Detectors()
    restarted.load_baselines(saved)
    assert restarted.baselines() == det.baselines()
    spike = [(12, minute_traffic(12, 40, input_tokens=5000))]
    assert active(run(restarted, spike)[12], "cost_spike")  # no warm-up needed after the restart
    assert not active(run(Detectors(), spike)[12], "cost_spike")  # a cold worker is still learning


def test_user_share_tracks_a_bounded_set_of_users_and_still_finds_the_heavy_one() -> None:
    daily = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="100")
    det = Detectors(DetectorConfig(user_share_users=50), budgets=[daily])
    # A whale early in the day, then thousands of one-call users, then the whale again: $0.60 + $0.60 = 1.2 %.
    whale = [ev(T0 + i, user="whale", cost=600_000_000) for i in range(1)]
    crowd = [ev(T0 + 10 + i, user=f"u{i}", cost=1_000 + i) for i in range(5_000)]
    again = [ev(T0 + 6_000, user="whale", cost=600_000_000)]
    share = active(run(det, [(0, whale + crowd + again)])[0], "user_share")
    assert [f.subject["user_id"] for f in share] == ["whale"]
    assert share[0].numbers["spent"] == "1200000000"  # never dropped: always among the biggest spenders
    day = det.user_share.days["acme"]
    assert len(day.users) <= 2 * 50
    # Dropped users had at most the floor, which the finding reports; the crowd's own spend bounds it.
    assert 0 < day.floor[0] < 5_000 * 6_000 and share[0].numbers["overstated_by_at_most"] == str(day.floor[0])


def test_a_user_dropped_from_the_tracked_set_comes_back_with_its_spend_overstated_at_most_by_the_floor() -> None:
    daily = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="100")
    det = Detectors(DetectorConfig(user_share_users=10), budgets=[daily])
    first = [ev(T0, user="late-bloomer", cost=5)] + [ev(T0 + 1 + i, user=f"u{i}", cost=100 + i) for i in range(40)]
    bloom = [ev(T0 + 100, user="late-bloomer", cost=1_100_000_000)]  # $1.10: over 1 % on its own
    share = active(run(det, [(0, first + bloom)])[0], "user_share")
    assert [f.subject["user_id"] for f in share] == ["late-bloomer"]
    spent = int(share[0].numbers["spent"])
    true_spent = 1_100_000_005
    assert true_spent < spent <= true_spent + int(share[0].numbers["overstated_by_at_most"])


def test_a_user_dropped_over_and_over_is_reported_with_all_of_its_spend() -> None:
    daily = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="100")
    det = Detectors(DetectorConfig(user_share_users=10), budgets=[daily])
    events = []
    for round_ in range(5):  # five small calls, each followed by enough bigger newcomers to trim it away
        events.append(ev(T0 + round_ * 100, user="late-bloomer", cost=50))
        events += [ev(T0 + round_ * 100 + 1 + i, user=f"u{round_}-{i}", cost=100 + i) for i in range(30)]
    events.append(ev(T0 + 1_000, user="late-bloomer", cost=1_100_000_000))
    share = active(run(det, [(0, events)])[0], "user_share")
    assert [f.subject["user_id"] for f in share] == ["late-bloomer"]
    spent, true_spent = int(share[0].numbers["spent"]), 1_100_000_250
    assert true_spent <= spent <= true_spent + int(share[0].numbers["overstated_by_at_most"])


def test_a_minute_of_fresh_users_holds_a_bounded_contributor_map_and_still_names_the_retrier() -> None:
    det = Detectors(DetectorConfig(contributors_tracked=20))
    start = T0 + 10 * MINUTE_MS
    crowd = [ev(start + i, user=f"u{i}", cost=1_000 + i) for i in range(3_000)]
    # The retrier never falls out: the retries ranking keeps it while the crowd churns through the cost ranking.
    storm = [ev(start + 5 + i * 10, user="retrier", attempt=2, status="error", cost=500) for i in range(400)]
    det.observe(sorted(crowd + storm, key=lambda p: p.event.occurred_at))
    data = det.tally.open[start][("acme", "chat", "gpt-4o")]
    assert len(data.contrib) <= 4 * 20
    findings = det.evaluate(start + MINUTE_MS + 6_000)
    f = active(findings, "retry_storm")[0]
    assert f.contributors[0].value == "retrier" and f.contributors[0].attempts == 400  # never dropped: exact
    assert f.numbers["retries"] == "400" and f.numbers["attempts"] == "3400"  # the minute's totals stay exact
    # Crowd members were dropped, so the finding says how far any contributor figure may be overstated.
    assert 0 < int(f.numbers["contributors_cost_nanos_over_by_at_most"]) < 3_000 * 4_000
    assert int(f.numbers["contributors_attempts_over_by_at_most"]) >= 1


def test_a_contributor_dropped_while_small_comes_back_overstated_at_most_by_the_reported_bound() -> None:
    cfg = DetectorConfig(contributors_tracked=10, warmup_minutes=2)
    det = Detectors(cfg)
    run(det, [(m, minute_traffic(m, 20, cost=1_000)) for m in range(3)])  # a learnt baseline of $0.00002/min
    start = T0 + 3 * MINUTE_MS
    first = [ev(start, user="whale", cost=5, input_tokens=1, output=0)]  # smallest by cost and by tokens
    crowd = [ev(start + 1 + i, user=f"u{i}", cost=100 + i) for i in range(100)]
    burst = [ev(start + 1_000 + i, user="whale", cost=200_000_000) for i in range(3)]
    findings = run(det, [(3, first + crowd + burst)])[3]
    spike = active(findings, "cost_spike")[0]
    whale = spike.contributors[0]
    assert whale.value == "whale"
    true_cost, true_tokens, true_attempts = 600_000_005, 1 + 3 * 1_100, 4
    over = {m: int(spike.numbers[f"contributors_{m}_over_by_at_most"]) for m in ("cost_nanos", "tokens", "attempts")}
    assert true_cost < whale.cost_nanos <= true_cost + over["cost_nanos"]  # dropped once: it re-entered at the floor
    assert true_tokens <= whale.tokens <= true_tokens + over["tokens"]
    assert true_attempts <= whale.attempts <= true_attempts + over["attempts"]


def test_a_contributor_dropped_over_and_over_keeps_its_total_and_tops_the_minute() -> None:
    cfg = DetectorConfig(contributors_tracked=100, warmup_minutes=2, spike_floor_nanos=1)
    det = Detectors(cfg)
    run(det, [(m, minute_traffic(m, 20, cost=100)) for m in range(3)])
    start = T0 + 3 * MINUTE_MS
    # One cheap call every 10 among 20,000 fresh users who each spend more than one of its calls. Space-Saving
    # guarantees whoever has more than the minute's total over the contributors kept (here about 32 M / 100).
    events = [ev(start + i, user=f"u{i}", cost=1_000 + i % 1_000) for i in range(20_000)]
    events += [ev(start + i * 10, user="bot", cost=900) for i in range(2_000)]
    findings = run(det, [(3, sorted(events, key=lambda p: p.event.occurred_at))])[3]
    spike = active(findings, "cost_spike")[0]
    bot = spike.contributors[0]
    assert bot.value == "bot"  # 1,800,000 nanos, against at most 1,999 for anyone else
    over = int(spike.numbers["contributors_cost_nanos_over_by_at_most"])
    assert 0 < over < 32_000_000 // 100 and 1_800_000 <= bot.cost_nanos <= 1_800_000 + over
    assert all(c.cost_nanos <= 1_999 + over for c in spike.contributors[1:])


def test_contributors_tracked_below_the_reported_top_is_refused() -> None:
    with pytest.raises(ValueError, match="contributors_tracked"):
        DetectorConfig(contributors_tracked=3, top_contributors=5)


@pytest.mark.parametrize("top", [-1, -2])
def test_a_reported_top_that_is_not_a_count_is_refused(top: int) -> None:
    """A negative top once made the trim keep all but one contributor (a slice from the end), so the map grew."""
    with pytest.raises(ValueError, match="top_contributors"):
        DetectorConfig(top_contributors=top, contributors_tracked=top)


def test_one_event_from_a_clock_running_ahead_does_not_close_the_minutes_a_replay_has_not_reached() -> None:
    det = Detectors()
    now = T0 + 60 * MINUTE_MS  # the backlog is an hour behind the clock
    ahead = ev(T0 + 4 * MINUTE_MS + 30_000)  # a client 4.5 minutes fast, inside the worker's skew bound
    det.observe(minute_traffic(0, 30) + [ahead])
    det.evaluate(now)
    assert det.tracked()["open_minutes"] == 2  # minute 0 and the far-ahead one: nothing judged on its word
    det.observe(minute_traffic(1, 30))
    judged = det.evaluate_minutes(now)
    assert [m for m, _ in judged] == [T0]  # the replay reached minute 1: minute 0 closes, minute 1 stays open
    assert T0 + MINUTE_MS in det.tally.open  # minute 1's own traffic counted in minute 1, not folded into a later one


def test_live_traffic_with_a_late_majority_is_still_judged_by_the_clock() -> None:
    det = Detectors()
    late_by = 30 * MINUTE_MS  # a publisher draining its spool beside live traffic
    for second in range(0, 3 * 60, 5):
        now = T0 + 40 * MINUTE_MS + second * 1_000
        det.observe([ev(now - 1_000) for _ in range(4)] + [ev(now - late_by) for _ in range(6)])
        det.evaluate(now)
    # Three minutes in, the first two live minutes are judged (as the clock says), not held for the late half.
    assert T0 + 40 * MINUTE_MS not in det.tally.open and T0 + 41 * MINUTE_MS not in det.tally.open


def _billed(at: int, cost: int, billed: int, model: str = "gpt-4o") -> PricedEvent:
    e = UsageEvent(
        event_id=f"e{next(_ids)}",
        occurred_at=at,
        tenant="acme",
        provider="openai",
        model=model,
        request_id=f"r{next(_ids)}",
        attempt=1,
        status="ok",
        input_tokens=1000,
        output_tokens=100,
        billed_cost_nanos=billed,
    )
    return PricedEvent(e, cost, "test")


def test_price_mismatch_fires_on_a_persistent_gap_and_resolves_when_bills_agree() -> None:
    cfg = DetectorConfig(price_mismatch_minutes=5, price_mismatch_min_events=20)
    det = Detectors(cfg)
    # Minute 0: 19 events billed 10 % above the catalog — too few to judge.
    first = run(det, [(0, [_billed(T0 + i, 1_000_000, 1_100_000) for i in range(19)])])
    assert not active(first[0], "price_mismatch")
    # Minute 1: two more; over the window 21 events, billed 2.31 M against 2.1 M computed (+10 %).
    second = run(det, [(1, [_billed(T0 + MINUTE_MS + i, 1_000_000, 1_100_000) for i in range(2)])])
    found = active(second[1], "price_mismatch")
    assert len(found) == 1
    f = found[0]
    assert f.dedup_key == "price_mismatch|tenant=acme|model=gpt-4o|provider=openai"
    assert f.numbers["billed_nanos"] == str(21 * 1_100_000) and f.numbers["computed_nanos"] == str(21 * 1_000_000)
    assert f.numbers["difference"] == "0.1000" and f.numbers["events"] == "21"
    # A gap under 5 % never fires: 3 % over 30 events of another model.
    quiet = run(
        det, [(2, [_billed(T0 + 2 * MINUTE_MS + i, 1_000_000, 1_030_000, model="gpt-4o-mini") for i in range(30)])]
    )
    assert not [x for x in active(quiet[2], "price_mismatch") if x.subject["model"] == "gpt-4o-mini"]
    # Once the mismatched minutes leave the 5-minute window, the condition clears.
    later = run(det, [(m, []) for m in range(3, 8)])
    states = [
        x.active for m in range(3, 8) for x in later[m] if x.kind == "price_mismatch" and x.subject["model"] == "gpt-4o"
    ]
    assert states and states[-1] is False and True in states
