"""The pure parts of the stream pipeline: budget records applied in order, the first fatal condition kept."""

from __future__ import annotations

import pytest

from costplane.budgets import Budget
from costplane.streams.pipeline.budgets import apply_changes, by_tenant
from costplane.streams.pipeline.fatal import (
    EXIT_INVALID_RATIO,
    EXIT_SINK_STOPPED,
    FatalLatch,
    InvalidRatioStop,
    SinkStopped,
)


def budget(budget_id: str, tenant: str, limit: int) -> Budget:
    return Budget(id=budget_id, scope={"tenant": tenant}, unit="tokens", limit=limit, version=1)


def test_budget_records_are_applied_in_order_and_bad_ones_skipped() -> None:
    budgets: dict[str, Budget] = {}
    a1, a2, b = budget("a", "acme", 10), budget("a", "acme", 20), budget("b", "*", 5)
    changed = apply_changes(
        budgets,
        [(b"a", a1.to_json().encode()), (b"b", b.to_json().encode()), (b"a", a2.to_json().encode()), (b"c", b"{")],
    )
    assert changed == {"a", "b"} and budgets == {"a": a2, "b": b}
    assert apply_changes(budgets, [(b"a", None)]) == {"a"} and budgets == {"b": b}  # a tombstone deletes


def test_only_tenant_named_budgets_go_to_the_guard() -> None:
    acme, every = budget("a", "acme", 10), budget("b", "*", 5)
    assert by_tenant([acme, every]) == {"acme": [acme]}


def test_the_first_fatal_condition_wins_and_is_raised_by_the_entry_point() -> None:
    latch = FatalLatch()
    latch.raise_recorded()  # nothing recorded: nothing raised
    assert latch.record(SinkStopped("the ClickHouse sink stopped: boom"))
    assert not latch.record(InvalidRatioStop("later"))
    with pytest.raises(SinkStopped, match="boom") as raised:
        latch.raise_recorded()
    assert raised.value.exit_code == EXIT_SINK_STOPPED == 4
    assert InvalidRatioStop("x").exit_code == EXIT_INVALID_RATIO == 3
