"""The real OpenAI and Anthropic SDKs, instrumented, against a local scripted server: one event per HTTP attempt.

The SDKs run unchanged, with their own retry loops (two retries by default); the server answers from a script.
Expected token counts come from the usage the script sends (made disjoint by hand) or, for estimates, from the
offline tokenizer applied to the prompt and the text the script streamed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import pytest
from scripted_llm import (
    ERROR_429,
    ERROR_500,
    Reply,
    anthropic_message,
    anthropic_stream,
    openai_chat,
    openai_chat_stream,
    scripted,
)

import costplane
from costplane.integrations import BudgetExceeded
from costplane.integrations.anthropic import instrument as instrument_anthropic
from costplane.integrations.openai import instrument as instrument_openai
from costplane.pricing.tokens import count_messages, count_text
from costplane.publisher.event import UsageEvent
from costplane.publisher.metrics import PublisherMetrics
from costplane.publisher.testing import InMemoryPublisher

pytestmark = pytest.mark.http

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me a short story about a lighthouse."}]
GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-20241022"


def _tokens(e: UsageEvent) -> tuple[int, int, int, int, int]:
    return e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens, e.reasoning_tokens


def _openai(url: str, pub: Any, **kw: Any) -> openai.OpenAI:
    return instrument_openai(openai.OpenAI(base_url=url + "/v1", api_key="test"), publisher=pub, tenant="acme", **kw)


def test_openai_retries_are_three_attempts_of_one_request() -> None:
    pub = InMemoryPublisher(strict=True)
    with scripted([ERROR_500, ERROR_429, openai_chat(1200, 300, cached=200, reasoning=120)]) as server:
        client = _openai(server.url, pub, feature="search")
        response = client.chat.completions.create(model=GPT, messages=MESSAGES, max_tokens=400)  # type: ignore[arg-type]
    assert response.choices[0].message.content == "hello"
    assert [(e.attempt, e.status) for e in pub.events] == [(1, "error"), (2, "rate_limited"), (3, "ok")]
    assert len({e.request_id for e in pub.events}) == 1 and len({e.event_id for e in pub.events}) == 3
    assert [_tokens(e) for e in pub.events] == [(0,) * 5, (0,) * 5, (1000, 200, 0, 180, 120)]
    assert {(e.tenant, e.feature, e.provider, e.model, e.operation, e.max_tokens) for e in pub.events} == {
        ("acme", "search", "openai", GPT, "chat", 400)
    }
    assert all(e.tokens_estimated is None and e.latency_ms is not None for e in pub.events)


def test_openai_stream_asks_for_usage_and_the_app_never_sees_that_chunk() -> None:
    pub = InMemoryPublisher(strict=True)
    usage = {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}
    with scripted([ERROR_500, openai_chat_stream(["Once", " upon", " a"], usage)]) as server:
        client = _openai(server.url, pub)
        stream = client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        chunks = list(stream)
        sent = [r["body"] for r in server.requests]
    assert all(len(c.choices) == 1 for c in chunks)  # no usage-only chunk with empty choices reached the app
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Once upon a"
    assert [b.get("stream_options") for b in sent] == [{"include_usage": True}] * 2
    assert [(e.attempt, e.status, _tokens(e)) for e in pub.events] == [
        (1, "error", (0,) * 5),
        (2, "ok", (40, 0, 0, 3, 0)),
    ]


def test_openai_stream_options_set_by_the_caller_are_left_alone() -> None:
    pub = InMemoryPublisher(strict=True)
    usage = {"prompt_tokens": 40, "completion_tokens": 1}
    with scripted([openai_chat_stream(["Hi"], usage)]) as server:
        client = _openai(server.url, pub)
        chunks = list(
            client.chat.completions.create(
                model=GPT,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # what the caller asked for
    assert [_tokens(e) for e in pub.events] == [(40, 0, 0, 1, 0)]


def test_openai_stream_abandoned_halfway_is_one_cancelled_estimated_attempt() -> None:
    pub = InMemoryPublisher(strict=True)
    words = ["Once", " upon", " a", " time"]
    with scripted([openai_chat_stream(words, {"prompt_tokens": 40, "completion_tokens": 4}, stall_after=2)]) as s:
        client = _openai(s.url, pub)
        stream = client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        received = [next(iter(stream)).choices[0].delta.content for _ in range(2)]
        stream.close()
    assert received == ["Once", " upon"]
    [event] = pub.events
    assert (event.attempt, event.status, event.tokens_estimated) == (1, "cancelled", True)
    assert event.input_tokens == count_messages(MESSAGES, GPT).tokens
    assert event.output_tokens == count_text("Once upon", GPT).tokens


def test_anthropic_retries_streams_and_an_abandoned_stream() -> None:
    pub = InMemoryPublisher(strict=True)
    replies = [
        ERROR_500,
        ERROR_429,
        anthropic_message(20, 90, cache_read=3000, cache_write=500),
        anthropic_stream(["A", " lighthouse"], 25, 7, cache_read=100),
        anthropic_stream(["A", " lighthouse", " keeper"], 25, 9, stall_after=3),
    ]
    with scripted(replies) as server:
        client = instrument_anthropic(
            anthropic.Anthropic(base_url=server.url, api_key="test"), publisher=pub, tenant="acme"
        )
        message = client.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES)  # type: ignore[arg-type]
        with client.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            text = stream.get_final_text()
        with client.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            first = next(iter(stream.text_stream))
    assert message.usage.output_tokens == 90 and text == "A lighthouse" and first == "A"
    assert [(e.attempt, e.status) for e in pub.events] == [
        (1, "error"),
        (2, "rate_limited"),
        (3, "ok"),
        (1, "ok"),
        (1, "cancelled"),
    ]
    assert len({e.request_id for e in pub.events}) == 3
    assert [_tokens(e) for e in pub.events[:4]] == [(0,) * 5, (0,) * 5, (20, 3000, 500, 90, 0), (25, 100, 0, 7, 0)]
    cut = pub.events[4]
    # message_start reported the input up front; the output is what was streamed before the stop.
    assert cut.tokens_estimated is True and cut.input_tokens == 25
    assert cut.output_tokens == max(1, count_text("A", CLAUDE).tokens)
    assert {(e.provider, e.model, e.max_tokens) for e in pub.events} == {("anthropic", CLAUDE, 256)}


def test_responses_api_and_embeddings_usage() -> None:
    pub = InMemoryPublisher(strict=True)
    responses_body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": GPT,
        "status": "completed",
        "output": [],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 500,
            "output_tokens": 900,
            "total_tokens": 1400,
            "input_tokens_details": {"cached_tokens": 100},
            "output_tokens_details": {"reasoning_tokens": 700},
        },
    }
    embeddings_body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5] * 8}],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    with scripted([Reply(200, responses_body), Reply(200, embeddings_body)]) as server:
        client = _openai(server.url, pub)
        client.responses.create(model=GPT, input="hi", max_output_tokens=1000)
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert [(e.operation, _tokens(e)) for e in pub.events] == [
        ("chat", (400, 100, 0, 200, 700)),
        ("embedding", (9, 0, 0, 0, 0)),
    ]
    assert pub.events[0].max_tokens == 1000


def test_timeouts_and_connection_errors_are_attempts_too() -> None:
    pub = InMemoryPublisher(strict=True)
    with scripted([Reply(200, {"x": 1}, delay_s=2.0)]) as server:
        client = instrument_openai(
            openai.OpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0, timeout=0.3),
            publisher=pub,
            tenant="acme",
        )
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
        closed_port = server.url  # the server is gone after this block
    client = instrument_openai(
        openai.OpenAI(base_url=closed_port + "/v1", api_key="t", max_retries=1), publisher=pub, tenant="acme"
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
    assert [(e.attempt, e.status) for e in pub.events] == [(1, "timeout"), (1, "error"), (2, "error")]


def test_async_client_attributes_follow_each_task() -> None:
    pub = InMemoryPublisher(strict=True)

    async def main(url: str) -> None:
        client = instrument_openai(
            openai.AsyncOpenAI(base_url=url + "/v1", api_key="t"), publisher=pub, tenant="acme", team="core"
        )

        async def one(user: str, turn: int) -> None:
            with costplane.attributes(user_id=user, session_id=f"s-{user}", turn=turn, channel="web"):
                await client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]

        await asyncio.gather(one("u1", 1), one("u2", 2))

    with scripted([openai_chat(10, 2), openai_chat(10, 2)]) as server:
        asyncio.run(main(server.url))
    got = sorted((e.user_id, e.session_id, e.turn, e.team, e.attributes["channel"]) for e in pub.events)
    assert got == [("u1", "s-u1", 1, "core", "web"), ("u2", "s-u2", 2, "core", "web")]


def test_async_stream_and_a_cancelled_task() -> None:
    pub = InMemoryPublisher(strict=True)
    usage = {"prompt_tokens": 40, "completion_tokens": 2}

    async def main(url: str) -> None:
        client = instrument_openai(
            openai.AsyncOpenAI(base_url=url + "/v1", api_key="t", max_retries=0), publisher=pub, tenant="acme"
        )
        stream = await client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)  # type: ignore
        assert [c.choices[0].delta.content async for c in stream][:2] == ["Hi", " there"]
        task = asyncio.create_task(client.chat.completions.create(model=GPT, messages=MESSAGES))  # type: ignore
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with scripted([openai_chat_stream(["Hi", " there"], usage), Reply(200, {"x": 1}, delay_s=3.0)]) as server:
        asyncio.run(main(server.url))
    assert [(e.status, _tokens(e)) for e in pub.events] == [("ok", (40, 0, 0, 2, 0)), ("cancelled", (0,) * 5)]


def test_azure_client_copies_and_an_unknown_body() -> None:
    pub = InMemoryPublisher(strict=True)
    with scripted([ERROR_500, openai_chat(10, 2), Reply(200, {"id": "x", "choices": []})]) as server:
        azure = instrument_openai(
            openai.AzureOpenAI(azure_endpoint=server.url, api_key="t", api_version="2024-10-21"),
            publisher=pub,
            tenant="acme",
        )
        azure.with_options(max_retries=1).chat.completions.create(model="prod-gpt", messages=MESSAGES)  # type: ignore
        client = _openai(server.url, pub)
        client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
    first, second, unknown = pub.events
    assert (first.provider, first.model, first.attempt, second.attempt) == ("azure", "prod-gpt", 1, 2)
    assert first.request_id == second.request_id
    # No usage in a 200 body: never a free call; the prompt is counted offline and the gap is reported.
    assert unknown.tokens_estimated is True and unknown.input_tokens == count_messages(MESSAGES, GPT).tokens
    assert pub.unrecognised == ["response_body"]


class _BrokenPublisher:
    """A publisher whose record() fails: the instrumentation must count it and let the call through."""

    def __init__(self) -> None:
        self.metrics = PublisherMetrics()

    def record(self, **fields: Any) -> bool:
        raise RuntimeError("publisher bug")


def test_an_instrumentation_failure_never_reaches_the_app() -> None:
    pub = _BrokenPublisher()
    with scripted([openai_chat(10, 2)]) as server:
        client = _openai(server.url, pub)
        response = client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
    assert response.usage is not None and response.usage.total_tokens == 12
    assert pub.metrics.errors.labels("instrumentation")._value.get() == 1


def test_block_raises_budget_exceeded_an_sdk_error_or_returns_the_fallback() -> None:
    from costplane.budgets import Budget
    from costplane.enforcers import BudgetGuard, InMemoryBudgetStore
    from costplane.enforcers.keys import KeyLayout

    store = InMemoryBudgetStore(KeyLayout("t"))
    store.publish_budgets("acme", [Budget.from_cli("tiny", scope="tenant=acme", limit_tokens=10)])
    guard = BudgetGuard(store)
    pub = InMemoryPublisher(strict=True)
    with scripted([]) as server:
        client = _openai(server.url, pub, guard=guard)
        with pytest.raises(openai.OpenAIError) as caught:
            client.chat.completions.create(model=GPT, messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
        assert isinstance(caught.value, BudgetExceeded) and "tiny" in caught.value.reason
        fallback = _openai(server.url, pub, guard=guard, fallback=lambda answer: f"sorry: {answer.kind}")
        assert fallback.chat.completions.create(model=GPT, messages=MESSAGES) == "sorry: block"  # type: ignore
        assert server.requests == []  # nothing was sent
    assert pub.events == []


def _memory_guard(budget: Any, *, is_async: bool = False) -> Any:
    from costplane.enforcers import AsyncBudgetGuard, BudgetGuard, InMemoryBudgetStore
    from costplane.enforcers.keys import KeyLayout

    store = InMemoryBudgetStore(KeyLayout("t"))
    store.publish_budgets("acme", [budget])
    cls = AsyncBudgetGuard if is_async else BudgetGuard
    return cls(store, decision_cache_s=0.0, budget_cache_s=0.0)


def test_degrade_sends_the_cheaper_model_and_the_event_names_it() -> None:
    from costplane.budgets import Budget

    guard = _memory_guard(Budget.from_cli("soft", scope="tenant=acme", limit_tokens=50, action="degrade:gpt-4o-mini"))
    pub = InMemoryPublisher(strict=True)
    with scripted([openai_chat(10, 2)]) as server:
        client = _openai(server.url, pub, guard=guard)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
        sent = server.requests[0]["body"]["model"]
    assert sent == "gpt-4o-mini" and [e.model for e in pub.events] == ["gpt-4o-mini"]


def test_async_guard_settles_a_streamed_call_with_every_attempt_when_the_stream_ends() -> None:
    from costplane.budgets import Budget

    prompt = count_messages(MESSAGES, GPT).tokens
    # Room for one call's worst case; after the first call settles 40 + 3 tokens, a second worst case no longer fits.
    limit = prompt + 20 + 40
    guard = _memory_guard(Budget.from_cli("tiny", scope="tenant=acme", limit_tokens=limit), is_async=True)
    pub = InMemoryPublisher(strict=True)
    usage = {"prompt_tokens": 40, "completion_tokens": 3}

    async def main(url: str) -> tuple[str, BaseException | None]:
        client = instrument_openai(
            openai.AsyncOpenAI(base_url=url + "/v1", api_key="t"), publisher=pub, guard=guard, tenant="acme"
        )
        stream = await client.chat.completions.create(
            model=GPT,
            messages=MESSAGES,
            max_tokens=20,  # type: ignore
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        try:
            await client.chat.completions.create(model=GPT, messages=MESSAGES, max_tokens=20)  # type: ignore
        except BudgetExceeded as exc:
            return text, exc
        return text, None

    with scripted([ERROR_500, openai_chat_stream(["a", "b", "c"], usage)]) as server:
        text, blocked = asyncio.run(main(server.url))
    assert text == "abc" and isinstance(blocked, openai.OpenAIError)
    assert [(e.attempt, e.status) for e in pub.events] == [(1, "error"), (2, "ok")]


def test_anthropic_block_is_an_anthropic_error() -> None:
    from costplane.budgets import Budget

    guard = _memory_guard(Budget.from_cli("none", scope="tenant=acme", limit_tokens=1))
    with scripted([]) as server:
        client = instrument_anthropic(
            anthropic.Anthropic(base_url=server.url, api_key="t"),
            publisher=InMemoryPublisher(),
            guard=guard,
            tenant="acme",
        )
        with pytest.raises(anthropic.AnthropicError) as caught:
            client.messages.create(model=CLAUDE, max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    assert isinstance(caught.value, BudgetExceeded) and caught.value.retry_after_s > 0


def test_async_anthropic_retry_and_stream() -> None:
    pub = InMemoryPublisher(strict=True)

    async def main(url: str) -> str:
        client = instrument_anthropic(anthropic.AsyncAnthropic(base_url=url, api_key="t"), publisher=pub, tenant="acme")
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:  # type: ignore
            return await stream.get_final_text()

    with scripted([ERROR_429, anthropic_stream(["Sea", " breeze"], 30, 4, cache_read=12)]) as server:
        text = asyncio.run(main(server.url))
    assert text == "Sea breeze"
    assert [(e.attempt, e.status, _tokens(e)) for e in pub.events] == [
        (1, "rate_limited", (0,) * 5),
        (2, "ok", (30, 12, 0, 4, 0)),
    ]


def test_gzip_bodies_and_a_gzip_stream_with_the_added_usage_chunk() -> None:
    pub = InMemoryPublisher(strict=True)
    stream_reply = openai_chat_stream(["Hi", " you"], {"prompt_tokens": 40, "completion_tokens": 2})
    stream_reply.gzip = True
    json_reply = openai_chat(100, 10, cached=30)
    json_reply.gzip = True
    with scripted([json_reply, stream_reply]) as server:
        client = _openai(server.url, pub)
        client.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True))  # type: ignore
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi you"
    assert all(len(c.choices) == 1 for c in chunks)
    assert [_tokens(e) for e in pub.events] == [(70, 30, 0, 10, 0), (40, 0, 0, 2, 0)]
