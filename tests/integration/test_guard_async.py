"""The asyncio guard gives the same answers as the sync one, against real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from costplane.budgets import Budget
from costplane.config import RedisSettings
from costplane.enforcers import AsyncBudgetGuard, AsyncRedisBudgetStore, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout

pytestmark = [pytest.mark.redis]


def test_async_reserve_settle_and_block(redis_settings: RedisSettings) -> None:
    url = redis_settings.url.get_secret_value()
    keys = KeyLayout(redis_settings.key_prefix)
    RedisBudgetStore.from_url(url, prefix=keys.prefix, timeout_s=1).publish_budgets(
        "acme", [Budget.from_cli("tok", scope="tenant=acme,user=*", limit_tokens=4000)]
    )

    async def scenario() -> list[str]:
        client = aredis.Redis.from_url(url)
        guard = AsyncBudgetGuard(AsyncRedisBudgetStore(client, keys), decision_cache_s=0.0)
        kinds = []
        async with await guard.reserve(
            {"tenant": "acme", "user": "u1"},
            provider="openai",
            model="gpt-4o-mini",
            prompt_tokens=1000,
            max_tokens=1000,
        ) as r:
            kinds.append(r.answer.kind)
            await r.asettle({"input_tokens": 1000, "output_tokens": 1000})
        second = await guard.reserve(
            {"tenant": "acme", "user": "u1"},
            provider="openai",
            model="gpt-4o-mini",
            prompt_tokens=1500,
            max_tokens=1000,
        )
        kinds.append(second.answer.kind)
        async with second:
            pass  # released on exit
        kinds.append(
            (
                await guard.reserve(
                    {"tenant": "acme", "user": "u1"},
                    provider="openai",
                    model="gpt-4o-mini",
                    prompt_tokens=1000,
                    max_tokens=1000,
                )
            ).answer.kind
        )
        kinds.append((await guard.check({"tenant": "acme", "user": "u1"})).kind)
        await client.aclose()
        return kinds

    # 2000 settled of 4000: a 2500-token call is refused, a 2000-token one fits exactly.
    assert asyncio.run(scenario()) == ["allow", "block", "allow", "allow"]
