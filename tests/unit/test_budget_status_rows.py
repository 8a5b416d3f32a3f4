"""Reading a guard counter hash as a budget member's standing, and the ledger beside it (pure logic)."""

from __future__ import annotations

import json

from costplane.budget_status import drift_by_budget, ledger_dimensions, ledger_totals, member_status, reconcile
from costplane.budgets import Budget
from costplane.streams.worker.api import RecentDecisions, authorized

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_BUDGET = Budget.from_cli("h", scope="tenant=acme,user=*", period="rolling-1h", limit_tokens=1_000)


def test_spent_counts_only_buckets_inside_the_window_and_open_reservations_only() -> None:
    now = T0 + 2 * 3_600_000 + 30_000  # 02:00:30; the rolling hour's window is [01:01, 02:01)
    counter = {
        str(T0 + 3_600_000).encode(): b"500",  # 01:00 bucket: left the window
        str(T0 + 3_660_000).encode(): b"70",  # 01:01: inside
        str(T0 + 7_200_000).encode(): b"30",  # 02:00: inside
        f"r{now + 5_000}:abc".encode(): b"40",  # open
        f"r{now - 5_000}:old".encode(): b"99",  # expired: holds nothing any more
        f"z{now + 5_000}:deg".encode(): b"0",
        b"_123:456:1000": b"-860",
        b"_k": b"_123:456:1000",
    }
    decision = json.dumps({"action": "block", "until_ms": now + 60_000, "reason": "over"})
    row = member_status(HOUR_BUDGET, "acme", "tenant=acme,user=u1", counter, decision, now)
    assert (row.spent, row.open_reservations, row.reserved) == (100, 1, 40)
    assert (row.window_start_ms, row.window_end_ms) == (T0 + 3_660_000, T0 + 7_260_000)
    assert (row.action, row.decision_until_ms, row.used) == ("block", now + 60_000, 0.1)
    assert "drift" not in row.to_json()  # no ledger: no drift


def test_ledger_totals_per_member_and_drift() -> None:
    usd = Budget.from_cli("t", scope="tenant=acme,plan=free,user=*", limit_usd="1")
    assert ledger_dimensions(usd) == ("tenant", "plan", "user")
    rows = [
        {"tenant": "acme", "plan": "free", "user": "u1", "cost_nanos": 10, "input_tokens": 1},
        {"tenant": "acme", "plan": "free", "user": "u1", "cost_nanos": 5, "input_tokens": 1},
        {"tenant": "acme", "plan": "free", "user": None, "cost_nanos": 7, "input_tokens": 1},
        {"tenant": "acme", "plan": "pro", "user": "u2", "cost_nanos": 9, "input_tokens": 1},
    ]
    assert ledger_totals(usd, rows) == {"tenant=acme,user=u1,plan=free": 15}
    now = T0 + 1000
    a = member_status(usd, "acme", "tenant=acme,user=u1,plan=free", {str(T0).encode(): b"18"}, None, now)
    b = member_status(usd, "acme", "tenant=acme,user=u9,plan=free", {}, None, now)
    both = reconcile([a, b], {("acme", "t"): {"tenant=acme,user=u1,plan=free": 15}})
    assert [(r.ledger_spent, r.drift, r.drift_fraction) for r in both] == [(15, 3, 0.2), (0, 0, 0.0)]
    assert drift_by_budget(both) == {("acme", "t", "usd"): (3, 1)}
    assert both[0].to_json()["spent_usd"] == "0.000000018"


def test_token_check_and_recent_decisions() -> None:
    assert authorized(None, None) and authorized("Bearer x", None)
    assert authorized("Bearer s3", "s3") and authorized("bearer s3", "s3")
    assert not authorized(None, "s3") and not authorized("Bearer s4", "s3") and not authorized("Basic s3", "s3")
    recent = RecentDecisions(size=3)
    for i, tenant in enumerate(("a", "b", "a", "a")):
        recent.add(json.dumps({"tenant": tenant, "n": i}))
    assert [r["n"] for r in recent.query("")] == [3, 2, 1]  # bounded, newest first
    assert [r["n"] for r in recent.query("tenant=a&limit=1")] == [3]
