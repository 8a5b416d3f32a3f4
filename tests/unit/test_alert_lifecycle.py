"""The alert lifecycle: one trigger and one resolve per incident, no pages from flapping, bounded state."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.core.findings import Contributor, Finding, Severity

MIN = 60_000
T0 = 1_790_000_000_000
CFG = LifecycleConfig(resolve_after_ms=2 * MIN, cooldown_ms=10 * MIN, stale_after_ms=5 * MIN, max_tracked=100)


def finding(
    active: bool, t: int, key: str = "retry_storm:acme:chat", severity: Severity = "warning", ratio: str = "0.18"
) -> Finding:
    return Finding(
        kind="retry_storm",
        dedup_key=key,
        tenant="acme",
        active=active,
        severity=severity,
        summary=f"retry ratio {ratio}",
        window_start_ms=t - MIN,
        window_end_ms=t,
        subject={"feature": "chat", "model": "gpt-4o"},
        numbers={"retry_ratio": ratio, "threshold": "0.05"},
        contributors=(Contributor("user_id", "u-17", 1_234_567, 900, 12),),
        suggested_action="Check the provider status.",
        runbook="docs/runbook.md#retry-storm",
    )


def run(lc: AlertLifecycle, levels: Iterable[bool | None], **kw: object) -> list[tuple[int, AlertEvent]]:
    """One evaluation per minute; None = the key is not reported that minute."""
    out: list[tuple[int, AlertEvent]] = []
    for i, level in enumerate(levels):
        t = T0 + i * MIN
        findings = [] if level is None else [finding(level, t, **kw)]  # type: ignore[arg-type]
        out.extend((i, e) for e in lc.observe(findings, t))
    return out


def actions(events: list[tuple[int, AlertEvent]]) -> list[tuple[int, str]]:
    return [(i, e.action) for i, e in events]


def test_one_trigger_and_one_resolve_per_incident() -> None:
    events = run(AlertLifecycle(CFG), [False, True, True, True, True, False, False, False, False])
    assert actions(events) == [(1, "trigger"), (7, "resolve")]  # clear at 5, resolved 2 minutes later
    trigger, resolve = events[0][1], events[1][1]
    assert trigger.dedup_key == resolve.dedup_key == "retry_storm:acme:chat"
    assert trigger.alert_id != resolve.alert_id
    assert resolve.summary.startswith("Resolved: ")
    assert resolve.numbers["retry_ratio"] == "0.18"
    assert trigger.contributors == resolve.contributors
    assert trigger.window_end_ms == T0 + MIN and resolve.occurred_at_ms == T0 + 7 * MIN


def test_flapping_within_resolve_after_keeps_one_incident() -> None:
    events = run(AlertLifecycle(CFG), [True, False, True, False, True, False, False, False])
    assert actions(events) == [(0, "trigger"), (7, "resolve")]


def test_retrigger_within_cooldown_is_suppressed_and_pages_when_it_outlasts_it() -> None:
    # resolved at minute 3; back at 5 (cooldown until 13): suppressed; clears at 6: nothing.
    events = run(AlertLifecycle(CFG), [True, False, False, False, False, True, False, False])
    assert actions(events) == [(0, "trigger"), (3, "resolve")]
    lc = AlertLifecycle(CFG)
    levels = [True, False, False, False] + [True] * 12  # active again from minute 4 through 15
    events = run(lc, levels)
    assert actions(events) == [(0, "trigger"), (3, "resolve"), (13, "trigger")]  # 13 = resolve (3) + cooldown


def test_after_cooldown_a_new_incident_triggers_at_once() -> None:
    levels = [True, False, False, False] + [False] * 10 + [True]
    assert actions(run(AlertLifecycle(CFG), levels)) == [(0, "trigger"), (3, "resolve"), (14, "trigger")]


def test_absent_condition_resolves_after_stale_time() -> None:
    events = run(AlertLifecycle(CFG), [True, True, None, None, None, None, None, None])
    assert actions(events) == [(0, "trigger"), (6, "resolve")]  # last seen at 1, stale after 5 minutes
    assert events[1][1].numbers["retry_ratio"] == "0.18"


def test_clearing_condition_that_disappears_still_resolves() -> None:
    assert actions(run(AlertLifecycle(CFG), [True, False, None, None])) == [(0, "trigger"), (3, "resolve")]


def test_escalation_emits_one_escalated_trigger_and_resolve_carries_top_severity() -> None:
    lc = AlertLifecycle(CFG)
    out = []
    for i, (active, sev) in enumerate(
        [
            (True, "warning"),
            (True, "critical"),
            (True, "critical"),
            (True, "warning"),
            (False, "info"),
            (False, "info"),
            (False, "info"),
        ]
    ):
        out += lc.observe([finding(active, T0 + i * MIN, severity=sev)], T0 + i * MIN)  # type: ignore[arg-type]
    assert [(e.action, e.severity, e.escalated) for e in out] == [
        ("trigger", "warning", False),
        ("trigger", "critical", True),
        ("resolve", "critical", False),
    ]


def test_zero_resolve_after_resolves_on_first_clear_evaluation() -> None:
    lc = AlertLifecycle(LifecycleConfig(resolve_after_ms=0, cooldown_ms=0, stale_after_ms=MIN))
    assert actions(run(lc, [True, False, True, False])) == [
        (0, "trigger"),
        (1, "resolve"),
        (2, "trigger"),
        (3, "resolve"),
    ]


def test_independent_keys_and_duplicates_in_one_evaluation() -> None:
    lc = AlertLifecycle(CFG)
    a, b = finding(True, T0, key="k:a"), finding(True, T0, key="k:b")
    events = lc.observe([a, b, finding(False, T0, key="k:a")], T0)
    assert sorted(e.dedup_key for e in events) == ["k:a", "k:b"]  # active wins over inactive for the same key
    assert sorted(lc.open_incidents()) == ["k:a", "k:b"]


def test_state_round_trips_through_json_mid_incident() -> None:
    levels = [True, True, False, False, False, False]
    whole = actions(run(AlertLifecycle(CFG), levels))
    first = AlertLifecycle(CFG)
    head = run(first, levels[:3])
    restored = AlertLifecycle.from_state(json.loads(json.dumps(first.state())), CFG)
    tail = []
    for i, level in enumerate(levels[3:], start=3):
        t = T0 + i * MIN
        tail += [(i, e.action) for e in restored.observe([finding(level, t)], t)]
    assert actions(head) + tail == whole == [(0, "trigger"), (4, "resolve")]


def test_replay_gives_the_same_alert_ids() -> None:
    levels = [True, True, False, False, False]
    ids_a = [e.alert_id for _, e in run(AlertLifecycle(CFG), levels)]
    ids_b = [e.alert_id for _, e in run(AlertLifecycle(CFG), levels)]
    assert ids_a == ids_b and len(set(ids_a)) == 2


def test_memory_is_bounded_and_open_incidents_are_never_dropped() -> None:
    lc = AlertLifecycle(LifecycleConfig(resolve_after_ms=0, cooldown_ms=10 * MIN, stale_after_ms=MIN, max_tracked=3))
    lc.observe([finding(True, T0, key=f"k{i}") for i in range(3)], T0)
    assert len(lc.observe([finding(True, T0 + 1, key="k3")], T0 + 1)) == 0  # full of open incidents
    assert lc.overflowed == 1 and len(lc) == 3
    lc.observe([finding(False, T0 + 2, key="k0")], T0 + 2)  # k0 resolves, stays for its cooldown
    events = lc.observe([finding(True, T0 + 3, key="k3")], T0 + 3)
    assert [e.dedup_key for e in events] == ["k3"] and len(lc) == 3  # k0's closed record made room
    lc.observe([], T0 + 20 * MIN)  # everything open goes stale and resolves; closed records expire later
    lc.observe([], T0 + 40 * MIN)
    assert len(lc) == 0


def test_config_rejects_negative_times() -> None:
    with pytest.raises(ValueError):
        LifecycleConfig(resolve_after_ms=-1)


@pytest.mark.parametrize("seed", range(20))
def test_random_noise_never_breaks_the_alternation(seed: int) -> None:
    """Whatever the level sequence: triggers and resolves alternate per key, and quiet at the end resolves all."""
    import random

    rng = random.Random(seed)
    lc = AlertLifecycle(CFG)
    keys = ["k:a", "k:b", "k:c"]
    seen: dict[str, list[str]] = {k: [] for k in keys}
    times: dict[str, list[tuple[int, str]]] = {k: [] for k in keys}
    minute = 0
    for minute in range(240):
        t = T0 + minute * MIN
        findings = [
            finding(rng.random() < 0.3, t, key=k, severity=rng.choice(["warning", "critical"]))
            for k in keys
            if rng.random() < 0.9
        ]
        for e in lc.observe(findings, t):
            seen[e.dedup_key].append("escalate" if e.escalated else e.action)
            if not e.escalated:
                times[e.dedup_key].append((t, e.action))
    for extra in range(1, 30):  # quiet: every open incident must resolve
        t = T0 + (minute + extra) * MIN
        for e in lc.observe([finding(False, t, key=k) for k in keys], t):
            seen[e.dedup_key].append(e.action)
    for key, actions_ in seen.items():
        edges = [a for a in actions_ if a != "escalate"]
        assert edges[::2] == ["trigger"] * len(edges[::2]) and edges[1::2] == ["resolve"] * len(edges[1::2]), key
        assert len(edges) % 2 == 0, key  # ends resolved
        for (t_resolve, a), (t_trigger, b) in zip(times[key][1::2], times[key][2::2], strict=False):
            assert (a, b) == ("resolve", "trigger") and t_trigger - t_resolve >= CFG.cooldown_ms, key
    assert lc.open_incidents() == []
