"""Budget model: parsing the CLI shape, scope membership, and windows (DST, months, rolling buckets)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from costplane.budgets import Budget, bucket_for, per_user_token_budgets_by_plan, window_for
from costplane.budgets.windows import buckets_in_window


def _ms(text: str, tz: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def test_cli_shape_and_json_round_trip() -> None:
    b = Budget.from_cli(
        "acme-users",
        scope="tenant=acme,user=*",
        period="month",
        tz="Europe/Paris",
        limit_usd="12.5",
        soft="0.8,0.5",
        action="degrade:gpt-4o-mini",
    )
    assert (b.unit, b.limit, b.soft, b.degrade_model) == ("usd", 12_500_000_000, (0.5, 0.8), "gpt-4o-mini")
    assert Budget.from_json(b.to_json()) == b
    assert Budget.from_cli("t", scope="tenant=acme", limit_tokens=10_000).unit == "tokens"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "user=*", "limit_usd": "1"}, "must name its tenant"),
        ({"scope": "tenant=acme,colour=red", "limit_usd": "1"}, "unknown scope dimension"),
        ({"scope": "tenant=acme", "limit_usd": "1", "limit_tokens": 5}, "exactly one"),
        ({"scope": "tenant=acme", "limit_usd": "ten"}, "not a number"),
        ({"scope": "tenant=acme", "limit_usd": "1", "period": "fortnight"}, "period"),
        ({"scope": "tenant=acme", "limit_usd": "1", "tz": "Mars/Olympus"}, "unknown timezone"),
        ({"scope": "tenant=acme", "limit_usd": "1", "soft": "1.5"}, "between 0 and 1"),
        ({"scope": "tenant=acme", "limit_usd": "1", "action": "explode"}, "block, notify or degrade"),
    ],
)
def test_readable_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget.from_cli("b", **kwargs)  # type: ignore[arg-type]


def test_member_keys() -> None:
    per_user = Budget.from_cli("b", scope="tenant=acme,user=*", limit_usd="1")
    assert per_user.member_of({"tenant": "acme", "user": "u7", "feature": "x"}) == "tenant=acme,user=u7"
    assert per_user.member_of({"tenant": "acme", "user": None}) is None
    assert per_user.member_of({"tenant": "globex", "user": "u7"}) is None
    feature = Budget.from_cli("f", scope="tenant=acme,feature=search", limit_usd="1")
    assert feature.member_of({"tenant": "acme", "feature": "search"}) == "tenant=acme,feature=search"
    assert feature.member_of({"tenant": "acme", "feature": "chat"}) is None


def test_calendar_day_across_dst_and_month_windows() -> None:
    spring = window_for("day", "Europe/Paris", _ms("2026-03-29T12:00:00", "Europe/Paris"))
    assert spring.start_ms == _ms("2026-03-29T00:00:00", "Europe/Paris")
    assert spring.end_ms - spring.start_ms == 23 * 3_600_000
    autumn = window_for("day", "Europe/Paris", _ms("2026-10-25T23:30:00", "Europe/Paris"))
    assert autumn.end_ms - autumn.start_ms == 25 * 3_600_000
    feb = window_for("month", "UTC", _ms("2028-02-29T23:59:59"))
    assert (feb.start_ms, feb.end_ms) == (_ms("2028-02-01T00:00:00"), _ms("2028-03-01T00:00:00"))
    dec = window_for("month", "America/New_York", _ms("2026-12-31T23:00:00", "America/New_York"))
    assert dec.end_ms == _ms("2027-01-01T00:00:00", "America/New_York")


def test_rolling_windows_are_exact_bucket_runs() -> None:
    at = _ms("2026-05-01T10:17:42")
    w = window_for("rolling-1h", "UTC", at)
    buckets = buckets_in_window("rolling-1h", "UTC", at)
    assert len(buckets) == 60 and buckets[0].start_ms == w.start_ms and buckets[-1].end_ms == w.end_ms
    assert bucket_for("rolling-1h", "UTC", at) == buckets[-1] and buckets[-1].contains(at)
    assert len(buckets_in_window("rolling-24h", "UTC", at)) == 96
    assert bucket_for("day", "UTC", at) == window_for("day", "UTC", at)


def test_plan_preset() -> None:
    budgets = per_user_token_budgets_by_plan("acme", {"free": 10_000, "pro": 200_000})
    free = next(b for b in budgets if b.scope["plan"] == "free")
    assert free.unit == "tokens" and free.limit == 10_000 and free.scope["user"] == "*"
    assert free.member_of({"tenant": "acme", "user": "u1", "plan": "free"}) == "tenant=acme,user=u1,plan=free"
    assert free.member_of({"tenant": "acme", "user": "u1", "plan": "pro"}) is None
