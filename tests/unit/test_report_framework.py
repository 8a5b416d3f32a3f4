"""The report framework's pure half: options, dimensions, the rollup cover, SQL shape, allocation, money."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from costplane.reports.allocation import proportional
from costplane.reports.definitions import REPORTS
from costplane.reports.errors import ReportError
from costplane.reports.money import mean_nanos, usd
from costplane.reports.options import ReportOptions, parse_time
from costplane.reports.ranges import cover
from costplane.reports.sql import build

NOW = datetime(2026, 3, 10, 12, 34, 56, tzinfo=UTC)


def _opts(report: str = "spend", **kw: object) -> ReportOptions:
    return ReportOptions.parse(report, now=NOW, **kw)  # type: ignore[arg-type]


def test_times_are_iso_epoch_or_ago_and_whole_minutes() -> None:
    assert parse_time("2026-01-31", NOW) == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_time("2026-01-31T12:00:59Z", NOW) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time("2026-01-31T13:00:00+01:00", NOW) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time("1767225600000", NOW) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("24h", NOW) == datetime(2026, 3, 9, 12, 34, tzinfo=UTC)
    assert parse_time("7d", NOW) == datetime(2026, 3, 3, 12, 34, tzinfo=UTC)
    assert parse_time("30m", NOW) == datetime(2026, 3, 10, 12, 4, tzinfo=UTC)
    assert _opts().since == datetime(2026, 2, 8, 12, 34, tzinfo=UTC)  # default: the last 30 days
    with pytest.raises(ReportError, match="cannot read time"):
        parse_time("yesterday", NOW)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"since": "2026-03-02", "until": "2026-03-01"}, "must be before"),
        ({"since": "2026-02-30"}, "cannot read time"),
        ({"top": 0}, "between 1 and"),
        ({"top": 10**20}, "between 1 and"),
        ({"since": "99999999d"}, "cannot read time"),
        ({"by": ["colour"]}, "unknown dimension"),
        ({"by": ["model,model"]}, "twice"),
        ({"where": ["model"]}, "DIM=VALUE"),
        ({"allocate": "evenly"}, "--allocate"),
        ({"tenant": " "}, "empty"),
    ],
)
def test_bad_requests_are_one_clear_error(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ReportError, match=message):
        _opts(**kw)


def test_aliases_and_attributes_keep_the_given_name() -> None:
    options = _opts(by=["user_id,attr.region", "day"])
    assert [(g.given, g.dimension.name) for g in options.by] == [
        ("user_id", "user"),
        ("attr.region", "attr.region"),
        ("day", "day"),
    ]
    assert options.by[1].dimension.attribute == "region"


def test_query_string_round_trip() -> None:
    options = _opts(
        by=["team", "attr.k"],
        where=["env=prod", "model="],
        since="7d",
        until="2026-03-10T00:00Z",
        tenant="acme & co",
        top=5,
        allocate="proportional",
        production_envs="live",
    )
    again = ReportOptions.from_query_string(options.to_query_string())
    assert again == options


def _minutes(start: datetime, end: datetime) -> set[datetime]:
    return {start + timedelta(minutes=m) for m in range(int((end - start).total_seconds() // 60))}


def test_cover_is_exact_disjoint_and_as_coarse_as_possible() -> None:
    rng = random.Random(5)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(300):
        start = base + timedelta(minutes=rng.randrange(6 * 1440))
        end = start + timedelta(minutes=rng.randrange(1, 5 * 1440))
        coarsest = rng.choice(["day", "hour", "minute"])
        pieces = cover(start, end, coarsest)
        covered: list[datetime] = []
        for piece in pieces:
            assert piece.end is not None
            covered += sorted(_minutes(piece.start, piece.end))
            step = {"minute": 1, "hour": 60, "day": 1440}[piece.granularity]
            assert (piece.start - base).total_seconds() % (step * 60) == 0  # aligned to its own buckets
            assert (piece.end - base).total_seconds() % (step * 60) == 0
            assert ["minute", "hour", "day"].index(piece.granularity) <= ["minute", "hour", "day"].index(coarsest)
        assert sorted(covered) == sorted(_minutes(start, end)) and len(covered) == len(set(covered))
        if coarsest == "day" and (end - start) >= timedelta(days=2):
            assert any(p.granularity == "day" for p in pieces)
        assert len([p for p in pieces if p.granularity == "minute"]) <= 2


def test_open_ended_cover_ends_in_the_coarsest_level() -> None:
    pieces = cover(datetime(2026, 1, 1, 10, 30, tzinfo=UTC), None)
    assert [(p.granularity, p.end) for p in pieces][-1] == ("day", None)


def test_sql_binds_every_value_and_picks_the_rollup_that_keeps_the_groupings() -> None:
    options = _opts(by=["tenant", "day"], tenant="x' OR 1=1 --", where=["team=a'b"], since="2026-03-01")
    query = build("spend", options, "cp")
    assert "x' OR" not in query.sql and "a'b" not in query.sql
    assert "x' OR 1=1 --" in query.params.values() and "a'b" in query.params.values()
    assert "cp.rollup_spend_day" in query.sql and "usage_events" not in query.sql
    assert query.source.startswith("rollup_spend")
    assert (
        "rollup_users_"
        in build(
            "users", _opts("users", by=["plan"]), "cp", families=("users", "spend"), needs=frozenset({"user_id"})
        ).sql
    )
    raw = build("spend", _opts(by=["session"]), "cp")
    assert "cp.usage_events" in raw.sql and raw.source.startswith("raw")
    hourly = build("spend", _opts(by=["hour"], since="2026-03-01"), "cp")
    assert "rollup_spend_day" not in hourly.sql and "rollup_spend_hour" in hourly.sql
    attr = build("spend", _opts(by=["attr.re'gion"]), "cp")
    assert "re'gion" not in attr.sql and "re'gion" in attr.params.values()


def test_raw_reads_say_what_the_raw_ttl_dropped() -> None:
    query = build("requests", _opts("requests", since="40d"), "cp", raw_only=True, raw_ttl_days=30)
    assert query.notes and "raw TTL 30 days" in query.notes[0]
    with pytest.raises(ReportError, match="expired"):
        build("requests", _opts("requests", since="60d", until="45d"), "cp", raw_only=True, raw_ttl_days=30)
    assert build("spend", _opts(since="40d"), "cp", raw_ttl_days=30).notes == []  # rollups keep history


def test_every_report_has_a_query_a_question_and_columns() -> None:
    for report in REPORTS.values():
        assert report.question.endswith("?") and report.columns and report.default_by
        build(
            report.query,
            _opts(report.name),
            "cp",
            raw_only=report.raw_only,
            families=report.families,
            needs=report.needs,
            order_by=report.order_by,
        )


def test_proportional_allocation_is_exact_and_proportional() -> None:
    rng = random.Random(3)
    for _ in range(500):
        weights = [rng.randrange(0, 10**9) for _ in range(rng.randrange(1, 8))]
        amount = rng.randrange(0, 10**10)
        parts = proportional(amount, weights)
        assert sum(parts) == (amount if sum(weights) else 0)
        for part, w in zip(parts, weights, strict=True):
            exact = Fraction(amount * w, sum(weights)) if sum(weights) else Fraction(0)
            assert abs(part - exact) < 1


def test_money_is_exact_text_and_averages_round_half_even() -> None:
    assert usd(1_500_000_001) == "1.500000001" and usd(0) == "0.000000000" and usd(7) == "0.000000007"
    assert mean_nanos(5, 2) == 2 and mean_nanos(7, 2) == 4 and mean_nanos(1, 0) is None


def test_monthly_extrapolation_is_exact_and_half_even() -> None:
    from costplane.reports.advice import monthly

    assert monthly(1_000, timedelta(days=30)) == 1_000
    assert monthly(7, timedelta(days=60)) == 4  # 3.5 → 4 (half to even)
    assert monthly(5, timedelta(days=60)) == 2  # 2.5 → 2
    assert monthly(123, timedelta(days=1)) == 3_690
    assert monthly(10, timedelta(0)) == 0


def test_routing_map_defaults_and_documents() -> None:
    from costplane.pricing.catalog import default_catalog
    from costplane.reports.routing import RoutingMap

    catalog = default_catalog()
    shipped = RoutingMap.shipped(catalog)
    assert shipped.cheaper("gpt-4o") == "gpt-4o-mini" and shipped.cheaper("gpt-4o-2024-08-06") == "gpt-4o-mini"
    assert shipped.cheaper("gpt-4o-mini") is None  # already the small one
    assert shipped.cheaper("claude-sonnet-4-5") == "claude-haiku-4-5"
    assert shipped.cheaper("gemini-2.5-pro") == "gemini-2.5-flash"
    assert shipped.cheaper("no-such-model") is None
    mine = RoutingMap.from_document({"gpt-4o.*": "gpt-4o-mini"}, "routes.yaml", catalog)
    assert mine.cheaper("gpt-4o-2024-11-20") == "gpt-4o-mini"
    for document, message in (
        ({"gpt-4o": "no-such-model"}, "does not know"),
        (["a", "b"], "must map"),
        ({"(": "gpt-4o-mini"}, "not a regular expression"),
    ):
        with pytest.raises(ReportError, match=message):
            RoutingMap.from_document(document, "bad.yaml", catalog)


def test_each_saving_is_extrapolated_from_the_span_its_report_covered() -> None:
    from costplane.reports.advice import advise

    retries = [
        {
            "tenant": "a",
            "feature": "f",
            "model": "m",
            "requests": 10,
            "retried_requests": 2,
            "retry_rate": 0.2,
            "failed_attempts": 2,
            "wasted_cost_nanos": 5 * 10**9,
        }
    ]
    batch = [
        {
            "tenant": "a",
            "feature": "f",
            "model": "m",
            "calls": 3,
            "cost_nanos": 9 * 10**9,
            "batch_cost_nanos": 6 * 10**9,
            "saving_nanos": 3 * 10**9,
            "reasons": ["configured feature"],
        }
    ]
    found = advise(
        {"retries": retries, "batch": batch},
        {"retries": timedelta(days=30), "batch": timedelta(days=3)},
        floor_nanos=10**9,
    )
    assert [(o.kind, o.monthly_saving_nanos) for o in found] == [
        ("batch_background", 30 * 10**9),
        ("fix_retries", 5 * 10**9),
    ]  # $3 over 3 days; $5 over 30 days
    assert advise({"retries": retries}, {"retries": timedelta(days=30)}, floor_nanos=6 * 10**9) == []
