"""The worker's own conditions: budget thresholds and blocks, dead-letter floods, fail-opens, as levels over time."""

from __future__ import annotations

from typing import Any

import pytest

from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.core.conditions import ConditionConfig, WorkerConditions
from costplane.streams.core.findings import Finding

S, MIN = 1000, 60_000
T0 = 1_790_000_040_000
MEMBER = "tenant=acme,user=u1"


def note(threshold: float = 0.5, start: int = T0, end: int = T0 + 86_400_000, spent: int = 600) -> dict[str, Any]:
    return {
        "type": "threshold",
        "tenant": "acme",
        "budget_id": "b1",
        "member": MEMBER,
        "threshold": threshold,
        "spent": spent,
        "limit": 1000,
        "unit": "tokens",
        "window_start_ms": start,
        "window_end_ms": end,
        "at_ms": start,
        "dedup_key": f"b1|{MEMBER}|{start}|{threshold}",
    }


def decision(action: str = "block", end: int = T0 + 86_400_000, unit: str = "tokens") -> dict[str, Any]:
    return {
        "type": "decision",
        "action": action,
        "tenant": "acme",
        "budget_id": "b1",
        "member": MEMBER,
        "reason": "r",
        "spent": 1100,
        "limit": 1000,
        "unit": unit,
        "window_start_ms": T0,
        "window_end_ms": end,
        "degrade_model": "gpt-4o-mini" if action == "degrade" else None,
        "version": 1,
        "decided_at_ms": T0,
    }


def lift() -> dict[str, Any]:
    return {
        "type": "lift",
        "tenant": "acme",
        "budget_id": "b1",
        "member": MEMBER,
        "action": "block",
        "reason": "budget raised",
        "at_ms": T0,
    }


def levels(c: WorkerConditions, now: int, kind: str) -> list[tuple[bool, str]]:
    return [(f.active, f.severity) for f in c.findings(now) if f.kind == kind]


def test_threshold_holds_until_its_window_ends_then_reports_clear_then_is_forgotten() -> None:
    c = WorkerConditions(ConditionConfig(clear_report_ms=5 * MIN))
    end = T0 + 10 * MIN
    c.threshold_crossed(note(end=end))
    found = [f for f in c.findings(T0 + MIN) if f.kind == "budget_threshold"]
    assert [(f.active, f.subject["threshold"]) for f in found] == [(True, "0.5")]
    assert found[0].dedup_key == "budget_threshold|tenant=acme|budget_id=b1|member=tenant=acme,user=u1|threshold=0.5"
    assert found[0].numbers["share"] == "0.6000" and "600 tokens of 1000 tokens" in found[0].summary
    assert levels(c, end - 1, "budget_threshold") == [(True, "warning")]
    assert levels(c, end, "budget_threshold") == [(False, "warning")]
    assert levels(c, end + 5 * MIN - 1, "budget_threshold") == [(False, "warning")]
    assert levels(c, end + 5 * MIN, "budget_threshold") == []
    assert c.tracked()["held"] == 0


def test_a_rolling_window_renotifying_extends_one_condition() -> None:
    c = WorkerConditions()
    for bucket in range(5):  # rolling-1m: every 5 s bucket re-notifies while the spend stays over
        start = T0 + bucket * 5 * S
        c.threshold_crossed(note(start=start - MIN + 5 * S, end=start + 5 * S))
        assert levels(c, start + S, "budget_threshold") == [(True, "warning")]
    assert levels(c, T0 + 25 * S, "budget_threshold") == [(False, "warning")]


def test_notify_budget_reaching_its_limit_is_a_threshold_of_one() -> None:
    c = WorkerConditions()
    c.decided(decision("notify"))
    found = c.findings(T0 + S)
    assert [(f.kind, f.subject["threshold"], f.active) for f in found] == [("budget_threshold", "1", True)]


def test_block_holds_until_lift_and_degrade_then_block_escalates() -> None:
    c = WorkerConditions()
    c.decided(decision("degrade"))
    assert levels(c, T0 + S, "budget_blocked") == [(True, "warning")]
    c.decided(decision("block"))
    found = [f for f in c.findings(T0 + 2 * S) if f.kind == "budget_blocked"]
    assert [(f.active, f.severity, f.numbers["action"]) for f in found] == [(True, "critical", "block")]
    c.lifted(lift(), T0 + 3 * S)
    found = [f for f in c.findings(T0 + 4 * S) if f.kind == "budget_blocked"]
    assert [(f.active, f.numbers["lift_reason"]) for f in found] == [(False, "budget raised")]


def test_lift_and_new_decision_in_one_outcome_keep_the_block_active() -> None:
    c = WorkerConditions()
    c.decided(decision())
    c.lifted(lift(), T0 + S)  # a budget change: lifted, and decided again with the new version
    c.decided(decision())
    assert levels(c, T0 + 2 * S, "budget_blocked") == [(True, "critical")]


def test_a_block_without_a_lift_ends_after_its_window_and_grace() -> None:
    c = WorkerConditions(ConditionConfig(block_grace_ms=MIN))
    end = T0 + 5 * MIN
    c.decided(decision(end=end))
    assert levels(c, end + MIN - 1, "budget_blocked") == [(True, "critical")]
    assert levels(c, end + MIN, "budget_blocked") == [(False, "critical")]


def test_a_lift_for_an_unknown_key_changes_nothing() -> None:
    c = WorkerConditions()
    c.lifted(lift(), T0)
    assert c.findings(T0 + S) == []


def test_dead_letter_flood_over_a_sliding_window() -> None:
    c = WorkerConditions(ConditionConfig(dead_letters_per_minute=60, dead_letter_window_ms=10 * S))
    c.counted("acme", 5, T0)  # before any dead letter: not kept
    for i in range(9):  # 9 in 10 s = 54/min: under
        c.dead_lettered("acme", ["undecodable"], T0 + i * S)
    assert levels(c, T0 + 9 * S, "dead_letter_flood") == []
    c.counted("acme", 30, T0 + 9 * S)
    c.dead_lettered("acme", ["invalid_event", "invalid_event"], T0 + 9 * S)  # 11 in 10 s = 66/min
    found = [f for f in c.findings(T0 + 9 * S) if f.kind == "dead_letter_flood"]
    assert [(f.active, f.severity, f.dedup_key) for f in found] == [(True, "warning", "dead_letter_flood|tenant=acme")]
    n = found[0].numbers
    assert (
        n["dead_letters"],
        n["valid_events"],
        n["per_minute"],
        n["reason_undecodable"],
        n["reason_invalid_event"],
    ) == ("11", "30", "66", "9", "2")
    assert [(x.value, x.attempts) for x in found[0].contributors] == [("undecodable", 9), ("invalid_event", 2)]
    # The first dead letters leave the window: 2 + … per 10 s is under the threshold again.
    assert levels(c, T0 + 10 * S + 1, "dead_letter_flood") == [(True, "warning")]  # 10 left: 60/min still over
    assert levels(c, T0 + 11 * S, "dead_letter_flood") == [(False, "warning")]
    assert c.tracked()["flood_tenants"] == 1
    assert levels(c, T0 + 20 * S, "dead_letter_flood") == [(False, "warning")]
    assert c.tracked()["flood_tenants"] == 0


def test_dead_letter_flood_is_critical_at_ten_times_the_threshold() -> None:
    c = WorkerConditions(ConditionConfig(dead_letters_per_minute=6, dead_letter_window_ms=10 * S))
    c.dead_lettered("acme", ["undecodable"] * 10, T0)
    assert levels(c, T0, "dead_letter_flood") == [(True, "critical")]


def test_fail_open_warns_then_escalates_and_clears_on_the_next_successful_write() -> None:
    c = WorkerConditions(ConditionConfig(fail_open_critical_ms=30 * S))
    c.effects_written(True, T0)
    assert c.findings(T0) == []
    c.effects_written(False, T0, decisions=2, counters=5)
    found = c.findings(T0 + S)
    assert [(f.kind, f.tenant, f.active, f.severity) for f in found] == [("fail_open", "*", True, "warning")]
    assert found[0].dedup_key == "fail_open|tenant=*|store=redis"
    c.effects_written(False, T0 + 20 * S, decisions=1, counters=1)
    found = c.findings(T0 + 30 * S)
    assert [(f.active, f.severity) for f in found] == [(True, "critical")]
    assert (
        found[0].numbers["failed_writes"],
        found[0].numbers["skipped_decisions"],
        found[0].numbers["skipped_counter_updates"],
    ) == ("2", "3", "6")
    c.effects_written(True, T0 + 31 * S)
    assert levels(c, T0 + 32 * S, "fail_open") == [(False, "critical")]


def test_through_the_lifecycle_each_condition_is_one_trigger_and_one_resolve() -> None:
    c = WorkerConditions(ConditionConfig(dead_letters_per_minute=6, dead_letter_window_ms=10 * S))
    life = AlertLifecycle(LifecycleConfig(resolve_after_ms=5 * S, cooldown_ms=MIN, stale_after_ms=MIN))
    events = []
    for t in range(0, 120):
        now = T0 + t * S
        if t == 3:
            c.decided(decision())
            c.effects_written(False, now)
        if 3 <= t < 8:
            c.dead_lettered("acme", ["undecodable"], now)
        if t == 20:
            c.lifted(lift(), now)
            c.effects_written(True, now)
        events += life.observe(c.findings(now), now)
    by_kind: dict[str, list[str]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e.action)
    assert by_kind == {
        "budget_blocked": ["trigger", "resolve"],
        "fail_open": ["trigger", "resolve"],
        "dead_letter_flood": ["trigger", "resolve"],
    }


def test_forget_tenant_and_state_round_trip() -> None:
    c = WorkerConditions()
    c.decided(decision())
    c.threshold_crossed(note())
    c.dead_lettered("acme", ["undecodable"] * 500, T0)
    state = c.state("acme")
    assert sorted(v["finding"]["kind"] for v in state.values()) == ["budget_blocked", "budget_threshold"]
    c.forget_tenant("acme")
    assert c.findings(T0 + S) == []
    restored = WorkerConditions()
    restored.load_state(state)
    found: list[Finding] = restored.findings(T0 + S)
    assert sorted((f.kind, f.active) for f in found) == [("budget_blocked", True), ("budget_threshold", True)]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="dead_letters_per_minute"):
        ConditionConfig(dead_letters_per_minute=0)


def test_dead_letters_of_ever_new_keys_are_counted_for_a_bounded_number_of_tenants() -> None:
    c = WorkerConditions(ConditionConfig(dead_letters_per_minute=30, dead_letter_window_ms=10 * S, max_flood_tenants=3))
    for i in range(10):  # garbage with a fresh key each time
        c.dead_lettered(f"junk-{i}", ["undecodable"], T0)
    assert c.tracked()["flood_tenants"] == 4  # three named, the rest as "unknown"
    assert [(f.tenant, f.numbers["dead_letters"]) for f in c.findings(T0) if f.active] == [("unknown", "7")]
