"""A guard built while no node of its Redis Cluster answers: nothing raises into the app, the failure policy
answers every call, and the guard starts enforcing once the cluster can be reached (here: never, on a closed port).

A cluster client connects while it is being built (a single-server client connects on first use), so without
care the app would get the cluster's error from ``BudgetGuard.from_settings()`` itself."""

from __future__ import annotations

import socket

import pytest

from costplane.enforcers.guard import UNAVAILABLE, BudgetGuard
from costplane.enforcers.policy import FailurePolicy

pytestmark = [pytest.mark.redis]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("policy", "kind"), [("open", "allow"), ("closed", "block")])
def test_an_unreachable_cluster_never_raises_into_the_app(
    monkeypatch: pytest.MonkeyPatch, policy: str, kind: str
) -> None:
    monkeypatch.setenv("COSTPLANE_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setenv("COSTPLANE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("COSTPLANE_REDIS_KEY_PREFIX", "unreachable")
    guard = BudgetGuard.from_settings(policy=FailurePolicy(default=policy))
    scope = {"tenant": "acme", "user": "u1"}
    for _ in range(3):
        answer = guard.check(scope)
        assert (answer.kind, answer.reason) == (kind, UNAVAILABLE)
    with guard.reserve(scope, model="gpt-4o-mini", provider="openai", prompt_tokens=10, max_tokens=10) as r:
        assert r.answer.kind == kind and r.answer.reason == UNAVAILABLE
