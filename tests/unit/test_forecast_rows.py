"""``costplane forecast``'s pure half: which spend rows it asks for, and how rows become per-member local days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from costplane.budgets import Budget
from costplane.reports.errors import ReportError
from costplane.reports.forecast import daily_by_member, forecast_rows, requests_for

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
USERS_NY = Budget.from_cli(
    "acme-users", scope="tenant=acme,user=*,feature=chat", period="month", tz="America/New_York", limit_usd="100"
)
TEAM = Budget.from_cli("search", scope="tenant=acme,team=search", period="month", limit_usd="50")
DAILY = Budget.from_cli("acme-day", scope="tenant=acme", period="day", limit_usd="5")
TOKENS = Budget.from_cli("acme-tokens", scope="tenant=acme", period="month", limit_tokens=1000)


def test_requests_group_wildcards_and_filter_fixed_values() -> None:
    reqs = requests_for([USERS_NY, TEAM, DAILY, TOKENS], NOW, None, None)
    assert [r.budget.id if r.budget else None for r in reqs] == [None, "acme-users", "search"]
    tenants, users, team = reqs
    assert [g.given for g in tenants.options.by] == ["day", "tenant"]
    assert tenants.options.since == datetime(2026, 10, 13, tzinfo=UTC)  # 28 days before Nov 10
    assert [g.given for g in users.options.by] == ["hour", "tenant", "user", "feature"]  # not UTC: per hour
    assert sorted((g.given, v) for g, v in users.options.where) == [("feature", "chat"), ("tenant", "acme")]
    assert users.options.since == datetime(2026, 10, 13, 4, 0, tzinfo=UTC)  # midnight in New York (EDT)
    assert [g.given for g in team.options.by] == ["day", "tenant", "team"]


@pytest.mark.parametrize(
    ("budget_id", "message"), [("nope", "no budget 'nope'"), ("acme-day", "per day"), ("acme-tokens", "counts tokens")]
)
def test_budgets_it_cannot_project(budget_id: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        requests_for([USERS_NY, DAILY, TOKENS], NOW, None, budget_id)


def test_hours_count_in_their_local_day_and_rows_without_the_member_are_left_out() -> None:
    users = requests_for([USERS_NY], NOW, None, "acme-users")[0]
    rows = [
        {"hour": "2026-11-10T03:00:00Z", "tenant": "acme", "user": "u1", "feature": "chat", "cost_nanos": 7},  # Nov 9
        {"hour": "2026-11-10T05:00:00Z", "tenant": "acme", "user": "u1", "feature": "chat", "cost_nanos": 5},
        {"hour": "2026-11-10T06:00:00Z", "tenant": "acme", "user": None, "feature": "chat", "cost_nanos": 100},
    ]
    assert daily_by_member(users, rows) == {
        ("acme", "tenant=acme,feature=chat,user=u1"): {date(2026, 11, 9): 7, date(2026, 11, 10): 5}
    }


def test_a_fixed_member_without_spend_still_gets_a_row() -> None:
    team = requests_for([TEAM], NOW, None, "search")[0]
    (row,) = forecast_rows([(team, [])], NOW)
    assert (row["budget_id"], row["member"], row["month_to_date_nanos"], row["projected_nanos"]) == (
        "search",
        "tenant=acme,team=search",
        0,
        0,
    )
    assert row["limit_nanos"] == 50 * 10**9 and row["projected_share"] == 0 and row["projected_cross_date"] is None
