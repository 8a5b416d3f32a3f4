"""Failure policy and circuit breaker: pure, driven by an injected clock."""

from __future__ import annotations

from costplane.enforcers import CircuitBreaker, FailurePolicy


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_first_matching_rule_wins_else_default() -> None:
    policy = FailurePolicy(
        default="open",
        rules=[
            ({"plan": "free", "feature": "chat"}, "closed"),
            ({"plan": "free"}, "open"),
            ({"tenant": "bank"}, "closed"),
        ],
    )
    assert policy.mode_for({"tenant": "acme", "plan": "free", "feature": "chat"}) == "closed"
    assert policy.mode_for({"tenant": "bank", "plan": "free", "feature": "search"}) == "open"
    assert policy.mode_for({"tenant": "bank", "plan": "pro"}) == "closed"
    assert policy.mode_for({"tenant": "acme"}) == "open"
    assert FailurePolicy(default="closed").mode_for({"tenant": "acme"}) == "closed"


def test_breaker_opens_after_threshold_and_probes_once_per_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=2.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and not breaker.open
    breaker.failure()
    assert breaker.open and not breaker.allow()
    clock.t += 2.0
    assert breaker.allow()  # the one probe of this cool-down
    assert not breaker.allow()  # everyone else keeps skipping Redis meanwhile
    breaker.failure()  # the probe failed: another cool-down
    clock.t += 1.0
    assert not breaker.allow()
    clock.t += 1.0
    assert breaker.allow()
    breaker.success()
    assert not breaker.open and breaker.allow() and breaker.allow()
