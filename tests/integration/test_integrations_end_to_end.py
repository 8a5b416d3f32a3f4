"""Instrumented SDK calls end to end: real SDKs → local server, events → real Kafka → worker → ClickHouse report;
and the guard on real Redis blocking the second call once a tiny budget is spent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis
from scripted_llm import (
    ERROR_429,
    ERROR_500,
    anthropic_message,
    anthropic_stream,
    openai_chat,
    openai_chat_stream,
    scripted,
)

from costplane.budgets import Budget
from costplane.config import (
    ClickHouseSettings,
    KafkaSettings,
    PublisherSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout
from costplane.integrations import BudgetExceeded
from costplane.integrations.anthropic import instrument as instrument_anthropic
from costplane.integrations.openai import instrument as instrument_openai
from costplane.pricing.tokens import count_messages, count_text
from costplane.publisher import UsagePublisher
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Write one line about the sea."}]
GPT, CLAUDE = "gpt-4o-mini", "claude-3-5-haiku-20241022"


def _report(worker: WorkerProcess, by: str) -> list[dict[str, Any]]:
    status, answer = worker.get("/api/report?" + ReportOptions.parse("spend", by=[by]).to_query_string(), 30)
    assert status == 200, answer
    return list(answer["rows"])


@pytest.mark.http
@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.clickhouse
@pytest.mark.slow
def test_every_attempt_reaches_kafka_and_the_report(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))
    publisher = UsagePublisher(kafka_settings, load_settings(PublisherSettings, spool_dir=tmp_path / "spool"))
    usage = {"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10}}
    replies = [
        ERROR_500,
        ERROR_429,
        openai_chat(120, 30, cached=20, reasoning=5),
        ERROR_500,
        ERROR_429,
        openai_chat_stream(["The", " sea"], usage),
        openai_chat_stream(["Waves", " roll", " in"], usage, stall_after=2),
        ERROR_500,
        ERROR_429,
        anthropic_message(40, 12, cache_read=100, cache_write=7),
        ERROR_500,
        ERROR_429,
        anthropic_stream(["Blue"], 30, 4),
    ]
    with scripted(replies) as server:
        gpt = instrument_openai(
            openai.OpenAI(base_url=server.url + "/v1", api_key="t"), publisher=publisher, tenant="acme", feature="e2e"
        )
        claude = instrument_anthropic(
            anthropic.Anthropic(base_url=server.url, api_key="t"), publisher=publisher, tenant="acme", feature="e2e"
        )
        gpt.chat.completions.create(model=GPT, messages=MESSAGES)  # type: ignore[arg-type]
        assert (
            [
                c.choices[0].delta.content
                for c in gpt.chat.completions.create(  # type: ignore[call-overload]
                    model=GPT, messages=MESSAGES, stream=True
                )
            ][:2]
            == ["The", " sea"]
        )
        abandoned = gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)  # type: ignore
        first_two = [c for _, c in zip(range(2), abandoned, strict=False)]
        abandoned.close()
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
        with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as s:  # type: ignore[arg-type]
            s.get_final_text()
    assert len(first_two) == 2
    assert publisher.flush(30) == 0
    publisher.close()

    cut_in = count_messages(MESSAGES, GPT).tokens
    cut_out = count_text("Waves roll", GPT).tokens
    # (attempts, input, cached, cache_write, output, reasoning) by provider and status, from the script.
    expected = {
        ("anthropic", "error"): (2, 0, 0, 0, 0, 0),
        ("anthropic", "rate_limited"): (2, 0, 0, 0, 0, 0),
        ("anthropic", "ok"): (2, 40 + 30, 100, 7, 12 + 4, 0),
        ("openai", "error"): (2, 0, 0, 0, 0, 0),
        ("openai", "rate_limited"): (2, 0, 0, 0, 0, 0),
        ("openai", "ok"): (2, 100 + 40, 20 + 10, 0, 25 + 5, 5),
        ("openai", "cancelled"): (1, cut_in, 0, 0, cut_out, 0),
    }
    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    worker = WorkerProcess(
        worker_env(kafka_settings, redis_settings, ch, sink_max_age_s=0.2), tmp_path / "worker.log", role="sink"
    ).start()
    try:
        worker.wait_ready(90)
        deadline = time.monotonic() + 60
        got: dict[tuple[str, str], tuple[int, ...]] = {}
        while time.monotonic() < deadline:
            rows = _report(worker, "provider,status")
            got = {
                (r["provider"], r["status"]): (
                    int(r["attempts"]),
                    int(r["input_tokens"]),
                    int(r["cached_input_tokens"]),
                    int(r["cache_write_tokens"]),
                    int(r["output_tokens"]),
                    int(r["reasoning_tokens"]),
                )
                for r in rows
            }
            if sum(v[0] for v in got.values()) >= 13:
                break
            time.sleep(0.5)
        assert got == expected, worker.log_tail()
        # Requests count first attempts: three OpenAI calls (two retried twice, one abandoned), two Anthropic ones.
        requests = {r["provider"]: (int(r["requests"]), int(r["retries"])) for r in _report(worker, "provider")}
        assert requests == {"openai": (3, 4), "anthropic": (2, 4)}
    finally:
        worker.stop()


@pytest.mark.http
@pytest.mark.redis
def test_the_guard_blocks_the_second_call_once_a_tiny_budget_is_spent(
    redis_settings: RedisSettings, tmp_path: Path
) -> None:
    from costplane.publisher.testing import InMemoryPublisher

    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    store = RedisBudgetStore(client, KeyLayout(redis_settings.key_prefix))
    prompt = count_messages(MESSAGES, GPT).tokens
    # The first call's worst case (prompt + max_tokens) fits; once its real 500 tokens are settled, it does not.
    limit = prompt + 100 + 10
    store.publish_budgets("acme", [Budget.from_cli("tiny", scope="tenant=acme", limit_tokens=limit)])
    guard = BudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
    pub = InMemoryPublisher(strict=True)
    try:
        with scripted([ERROR_500, openai_chat(450, 50)]) as server:
            gpt = instrument_openai(
                openai.OpenAI(base_url=server.url + "/v1", api_key="t"), publisher=pub, guard=guard, tenant="acme"
            )
            gpt.chat.completions.create(model=GPT, messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
            guard.flush()
            with pytest.raises(BudgetExceeded) as caught:
                gpt.chat.completions.create(model=GPT, messages=MESSAGES, max_tokens=100)  # type: ignore
            assert isinstance(caught.value, openai.OpenAIError) and "tiny" in caught.value.reason
            assert len(server.requests) == 2  # one call, two attempts; the blocked call sent nothing
        assert [(e.attempt, e.status) for e in pub.events] == [(1, "error"), (2, "ok")]
    finally:
        for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
            client.delete(key)
        client.close()
