"""The sink's pure half: raw rows, dedup within a batch, rollup arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

from costplane.pricing.ledger import LedgerAmounts
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.processor import (
    RAW_COLUMNS,
    ROLLUP_MEASURES,
    SPEND,
    USERS,
    Pending,
    dedup_batch,
    raw_row,
    rollup_all,
    rollup_rows,
    seen_rows,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def _pending(event_id: str, offset: int = 0, **kw: object) -> Pending:
    fields: dict[str, object] = dict(
        event_id=event_id,
        occurred_at=T0,
        tenant="acme",
        provider="openai",
        model="gpt-4o",
        request_id="r1",
        attempt=1,
        status="ok",
        input_tokens=100,
        output_tokens=10,
    )
    cost = int(kw.pop("cost", 1_000))  # type: ignore[call-overload]
    ledger = kw.pop("ledger", LedgerAmounts())
    unpriced = bool(kw.pop("unpriced", False))
    fields.update(kw)
    priced = PricedEvent(UsageEvent(**fields), cost, "v1", unpriced)  # type: ignore[arg-type]
    return Pending(priced, partition=0, offset=offset, ledger=ledger)  # type: ignore[arg-type]


def test_raw_row_has_every_column_in_order() -> None:
    item = _pending("e1", offset=7, team="search", attributes={"k": "v"}, tokens_estimated=True)
    row = raw_row(item, "b1", NOW)
    assert len(row) == len(RAW_COLUMNS)
    named = dict(zip(RAW_COLUMNS, row, strict=True))
    assert named["event_id"] == "e1"
    assert named["occurred_at"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert named["team"] == "search" and named["feature"] is None
    assert named["attributes"] == {"k": "v"} and named["tokens_estimated"] is True
    assert (named["cost_nanos"], named["price_version"], named["unpriced"]) == (1_000, "v1", False)
    assert (named["sink_batch_id"], named["kafka_partition"], named["kafka_offset"]) == ("b1", 0, 7)
    assert named["ingested_at"] == NOW


def test_every_usage_event_field_is_a_column() -> None:
    assert set(UsageEvent.__dataclass_fields__) <= set(RAW_COLUMNS)


def test_dedup_batch_keeps_first_occurrence_in_order() -> None:
    items = [_pending("a", 0), _pending("b", 1), _pending("a", 2), _pending("c", 3), _pending("b", 4)]
    kept = dedup_batch(items)
    assert [(i.priced.event.event_id, i.offset) for i in kept] == [("a", 0), ("b", 1), ("c", 3)]


def test_rollups_sum_exactly_per_bucket_and_dimensions() -> None:
    items = [
        _pending("a", cost=5, occurred_at=T0 + 1_000),
        _pending("b", cost=7, occurred_at=T0 + 59_999, attempt=2, status="error"),
        _pending("c", cost=11, occurred_at=T0 + 60_000, model="gpt-4o-mini"),
        _pending("d", cost=13, occurred_at=T0 + 3_600_000, status="timeout", attempt=3),
    ]
    rows = [raw_row(i, "b", NOW) for i in items]
    minute = [dict(zip(SPEND.columns, r, strict=True)) for r in rollup_rows(rows, "minute")]
    # a and b share minute 0 but differ in status: two rows; c and d each their own.
    assert len(minute) == 4
    hour = [dict(zip(SPEND.columns, r, strict=True)) for r in rollup_rows(rows, "hour")]
    first_hour_gpt4o = [r for r in hour if r["bucket"] == datetime(2026, 1, 1, tzinfo=UTC) and r["model"] == "gpt-4o"]
    assert sum(r["attempts"] for r in first_hour_gpt4o) == 2
    assert sum(r["requests"] for r in first_hour_gpt4o) == 1 and sum(r["retried_requests"] for r in hour) == 1
    day = [dict(zip(SPEND.columns, r, strict=True)) for r in rollup_rows(rows, "day")]
    assert sum(r["cost_nanos"] for r in day) == 36
    assert sum(r["failed_cost_nanos"] for r in day) == 20
    assert sum(r["retries"] for r in day) == 2
    assert sum(r["failed_attempts"] for r in day) == 2
    assert sum(r["input_tokens"] for r in day) == 400
    assert all(r["team"] == "" and r["service_tier"] == "" for r in day)  # missing dimension → ""


def test_rollups_are_deterministic_whatever_the_row_order() -> None:
    items = [_pending(f"e{i}", cost=i, occurred_at=T0 + i * 7_000, team=f"t{i % 3}") for i in range(50)]
    rows = [raw_row(i, "b", NOW) for i in items]
    assert rollup_rows(rows, "minute") == rollup_rows(list(reversed(rows)), "minute")


def test_rollups_accept_naive_datetimes_read_back_from_clickhouse() -> None:
    row = list(raw_row(_pending("a", occurred_at=T0 + 61_000), "b", NOW))
    row[RAW_COLUMNS.index("occurred_at")] = datetime(2026, 1, 1, 0, 1, 1)
    (out,) = rollup_rows([tuple(row)], "minute")
    assert out[0] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def test_seen_rows_carry_where_each_event_came_from() -> None:
    rows = [raw_row(_pending(e, offset=n), "b", NOW) for n, e in enumerate(["c", "a", "b"])]
    assert seen_rows(rows, NOW)[1] == ("a", "acme", 0, 1, "b", NOW)


def test_one_pass_rollups_equal_per_granularity_rollups() -> None:
    items = [
        _pending(
            f"e{i}",
            cost=i,
            occurred_at=T0 + i * 977_000,
            team=f"t{i % 3}",
            attempt=1 + i % 2,
            status=("ok", "error")[i % 5 == 0],
        )
        for i in range(300)
    ]
    rows = [raw_row(i, "b", NOW) for i in items]
    combined = rollup_all(rows)
    for family in (SPEND, USERS):
        for g in ("minute", "hour", "day"):
            assert combined[family.name][g] == rollup_rows(rows, g, family)  # type: ignore[arg-type,index]
            assert sum(r[family.columns.index("cost_nanos")] for r in combined[family.name][g]) == sum(range(300))  # type: ignore[index]


def test_rollups_equal_a_plain_sum_per_bucket_and_dimensions_on_random_rows() -> None:
    """Checked against the definition, computed the slow obvious way, on rows with missing dimensions, failures,
    retries, unpriced events, ledger amounts and result-cache hits spread over three days, for both families."""
    import random

    rng = random.Random(11)
    items = [
        _pending(
            f"e{i}",
            i,
            occurred_at=T0 + rng.randrange(3 * 86_400_000),
            tenant=rng.choice(["a", "b"]),
            model=rng.choice(["m1", "m2"]),
            attempt=rng.choice([1, 1, 2, 3]),
            status=rng.choice(["ok", "error"]),
            input_tokens=rng.randrange(5000),
            cached_input_tokens=rng.randrange(50),
            output_tokens=rng.randrange(300),
            feature=rng.choice([None, "chat"]),
            user_id=rng.choice([None, "u1", "u2"]),
            plan=rng.choice([None, "free"]),
            operation=rng.choice([None, "chat", "embedding"]),
            team=rng.choice([None, "t1"]),
            system_prompt_tokens=rng.choice([None, 1500]),
            result_cache_hit=rng.choice([None, True]),
            cost=rng.randrange(10**6),
            unpriced=rng.random() < 0.1,
            ledger=LedgerAmounts(*(rng.randrange(1000) for _ in LedgerAmounts._fields)),
        )
        for i in range(600)
    ]
    rows = [raw_row(item, "b1", NOW) for item in items]
    got = rollup_all(rows)
    for family in (SPEND, USERS):
        for granularity, size in (("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)):
            want: dict[tuple[object, ...], list[object]] = {}
            for item in items:
                e, cost, ledger = item.priced.event, item.priced.cost_nanos, item.ledger
                failed = e.status != "ok"
                tokens = [
                    e.input_tokens,
                    e.cached_input_tokens,
                    e.cache_write_tokens,
                    e.output_tokens,
                    e.reasoning_tokens,
                ]
                dims = [
                    int(item.priced.unpriced) if d == "unpriced" else getattr(e, d) or "" for d in family.dimensions
                ]
                key = ((e.occurred_at // size) * size, *dims)
                values = {
                    "requests": int(e.attempt == 1),
                    "retried_requests": int(e.attempt == 2),
                    "attempts": 1,
                    "retries": int(e.attempt > 1),
                    "failed_attempts": int(failed),
                    "input_tokens": tokens[0],
                    "cached_input_tokens": tokens[1],
                    "cache_write_tokens": tokens[2],
                    "output_tokens": tokens[3],
                    "reasoning_tokens": tokens[4],
                    "failed_tokens": sum(tokens) if failed else 0,
                    "cost_nanos": cost,
                    "failed_cost_nanos": cost if failed else 0,
                    "unpriced_attempts": int(item.priced.unpriced),
                    "unpriced_tokens": sum(tokens) if item.priced.unpriced else 0,
                    "system_prompt_tokens": e.system_prompt_tokens or 0,
                    "result_cache_hits": int(bool(e.result_cache_hit)),
                    **ledger._asdict(),
                }
                assert set(values) == set(ROLLUP_MEASURES)
                sums = want.setdefault(key, [0] * len(ROLLUP_MEASURES) + [e.occurred_at, e.occurred_at])
                for n, name in enumerate(ROLLUP_MEASURES):
                    sums[n] = int(sums[n]) + values[name]  # type: ignore[call-overload]
                sums[-2] = min(int(sums[-2]), e.occurred_at)  # type: ignore[call-overload]
                sums[-1] = max(int(sums[-1]), e.occurred_at)  # type: ignore[call-overload]
            width = len(family.dimensions)
            rebuilt = {
                (int(r[0].timestamp() * 1000), *r[1 : 1 + width]): [
                    *r[1 + width : -2],
                    int(r[-2].timestamp() * 1000),
                    int(r[-1].timestamp() * 1000),
                ]
                for r in got[family.name][granularity]  # type: ignore[index]
            }
            assert rebuilt == want, (family.name, granularity)
