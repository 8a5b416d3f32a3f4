"""``CostplaneLogger`` with LiteLLM's own mock responses (offline): every retry and fallback is one event."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import costplane
from costplane.publisher.testing import InMemoryPublisher

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM fetches prices over the network otherwise


def _wait(pub: InMemoryPublisher, n: int) -> None:
    """LiteLLM runs its callbacks on a thread pool: wait until they have all reported."""
    deadline = time.monotonic() + 20
    while len(pub.events) < n and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def logged() -> Iterator[InMemoryPublisher]:
    import litellm

    from costplane.integrations.litellm import CostplaneLogger

    pub = InMemoryPublisher(strict=True)
    logger = CostplaneLogger(pub, tenant="acme", env="test")
    litellm.callbacks = [logger]
    try:
        yield pub
    finally:
        # LiteLLM copies loggers into its own lists once; take this one out of all of them.
        litellm.logging_callback_manager.remove_callback_from_all_lists(logger)
        litellm.callbacks = []


def test_retries_and_the_fallback_deployment_are_attempts_of_one_request(logged: InMemoryPublisher) -> None:
    from litellm import Router

    router = Router(
        model_list=[
            {
                "model_name": "main",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_key": "x",
                    "mock_response": "litellm.RateLimitError",
                },
            },
            {
                "model_name": "backup",
                "litellm_params": {
                    "model": "anthropic/claude-3-5-haiku-20241022",
                    "api_key": "x",
                    "mock_response": "fine",
                },
            },
        ],
        fallbacks=[{"main": ["backup"]}],
        num_retries=2,
        retry_after=0,
    )
    with costplane.attributes(feature="search", session_id="s1"):
        response: Any = router.completion(
            model="main",
            messages=[{"role": "user", "content": "hi"}],
            metadata={"tags": ["prod", "beta"], "user_api_key_team_id": "team-x"},
        )
    assert response.choices[0].message.content == "fine"
    _wait(logged, 4)
    events = sorted(logged.events, key=lambda e: e.attempt)
    assert [(e.attempt, e.status, e.provider, e.model) for e in events] == [
        (1, "rate_limited", "openai", "gpt-4o-mini"),
        (2, "rate_limited", "openai", "gpt-4o-mini"),
        (3, "rate_limited", "openai", "gpt-4o-mini"),
        (4, "ok", "anthropic", "claude-3-5-haiku-20241022"),
    ]
    assert len({e.request_id for e in events}) == 1 and len({e.event_id for e in events}) == 4
    usage = response.usage
    ok = events[-1]
    assert (ok.input_tokens, ok.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert all(e.input_tokens == 0 for e in events[:3])
    assert {(e.tenant, e.env, e.feature, e.session_id, e.team, e.attributes["tags"]) for e in events} == {
        ("acme", "test", "search", "s1", "team-x", "prod,beta")
    }
    assert ok.attributes["litellm_model_group"] == "backup"


def test_a_plain_completion_with_user_and_max_tokens(logged: InMemoryPublisher) -> None:
    import litellm

    litellm.completion(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        mock_response="hello",
        user="u-7",
        max_tokens=64,
    )
    _wait(logged, 1)
    [event] = logged.events
    assert (event.user_id, event.max_tokens, event.status, event.attempt) == ("u-7", 64, "ok", 1)
    assert event.latency_ms is not None and event.input_tokens > 0


def test_a_broken_publisher_is_counted_not_raised() -> None:
    from costplane.integrations.litellm import CostplaneLogger
    from costplane.publisher.metrics import PublisherMetrics

    class Broken:
        metrics = PublisherMetrics()

        def record(self, **fields: Any) -> bool:
            raise RuntimeError("bug")

    broken = Broken()
    logger = CostplaneLogger(broken, tenant="acme")
    slo = {
        "status": "success",
        "trace_id": "t",
        "id": "i",
        "model": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    logger.log_success_event({"standard_logging_object": slo}, None, None, None)
    assert broken.metrics.errors.labels("instrumentation")._value.get() == 1
    assert logger.fields({}, None) is None  # no standard logging payload: nothing to record
