"""The demo's story as data: its simulated clock, budgets and services (pure, seeded)."""

from __future__ import annotations

from costplane.demo_story import (
    MINUTE_MS,
    SIM_MINUTES,
    Call,
    MalformedJsonRetries,
    SimClock,
    demo_budgets,
    demo_services,
)


def test_simulated_time_starts_in_the_past_and_reaches_the_wall_clock_at_the_end() -> None:
    clock = SimClock(wall_start_s=1_000.0, seconds=60)
    assert clock.at(1_000.0) == 1_000_000 - SIM_MINUTES * MINUTE_MS
    assert clock.at(1_060.0) == 1_060_000
    assert clock.minute(1_030.0) == (SIM_MINUTES * 60 + 60) / 120  # half the run: half the story's minutes


def test_services_are_seeded_and_rates_are_per_simulated_minute() -> None:
    def one_story(seed: int) -> list[tuple[str, str, int]]:
        calls = []
        for service in demo_services(seed):
            for step in range(SIM_MINUTES * 10):
                calls += [(c.service, c.model, c.prompt_tokens) for c in service.calls(step / 10, 0.1)]
        return calls

    assert one_story(3) == one_story(3) != one_story(4)
    chat = next(s for s in demo_services(1) if s.name == "chat")
    assert sum(1 for step in range(100) for _ in chat.calls(1 + step / 100, 0.01)) == 20  # 20 per simulated minute


def test_retries_happen_in_the_storm_and_resend_the_whole_prompt() -> None:
    service = MalformedJsonRetries("invoice-extract", 16)
    inside = [c for _ in range(200) for c in service.one(4.0)]
    outside = [c for _ in range(200) for c in service.one(9.0)]
    retries_in = sum(1 for c in inside if c.attempt > 1)
    assert retries_in > 100 and sum(1 for c in outside if c.attempt > 1) < 15
    requests: dict[str | None, list[Call]] = {}
    for c in inside:
        requests.setdefault(c.request_id, []).append(c)
    for attempts in requests.values():
        assert len({a.prompt_tokens for a in attempts}) == 1  # each retry resends the whole prompt
        assert [a.status for a in attempts] == ["error"] * (len(attempts) - 1) + ["ok"]  # until one parses


def test_demo_budgets_cover_the_four_kinds() -> None:
    by_id = {b.id: b for b in demo_budgets()}
    assert by_id["acme-monthly"].period == "month" and by_id["acme-monthly"].soft == (0.5, 0.8)
    assert {b.scope.get("plan") for b in by_id.values() if b.unit == "tokens"} == {"free", "pro"}
    assert by_id["acme-staging-cap"].scope == {"tenant": "acme", "env": "staging"}
    assert by_id["globex-support-degrade"].action == "degrade:gpt-4o-mini"
