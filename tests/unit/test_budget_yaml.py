"""Budgets from a YAML file: the CLI's fields per entry, all validated first, errors naming the entry."""

from __future__ import annotations

import pytest

from costplane.budgets import Budget, BudgetError, budgets_from_yaml

GOOD = """
- id: acme-daily
  scope: tenant=acme
  period: day
  tz: Europe/Paris
  limit_usd: "10.25"
  soft: [0.5, 0.8]
  action: degrade:gpt-4o-mini
- id: acme-users
  scope: {tenant: acme, user: "*"}
  period: rolling-1h
  limit_tokens: 10000
"""


def test_yaml_list_of_cli_fields() -> None:
    daily, users = budgets_from_yaml(GOOD)
    assert (daily.limit, daily.unit, daily.soft, daily.tz) == (10_250_000_000, "usd", (0.5, 0.8), "Europe/Paris")
    assert daily.degrade_model == "gpt-4o-mini"
    assert (users.scope, users.unit, users.limit, users.period) == (
        {"tenant": "acme", "user": "*"},
        "tokens",
        10_000,
        "rolling-1h",
    )
    stored = budgets_from_yaml(f"budgets:\n  - {daily.to_json()}\n")
    assert stored == [daily]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML"),
        ("id: x", "holds a list"),
        (
            "- id: a\n  scope: tenant=acme\n  limit_usd: 1\n- id: b\n  scope: tenant=acme\n  limit_usd: x",
            r"entry 1 \(b\)",
        ),
        ("- id: a\n  scope: tenant=acme\n  limit_usd: 1\n  colour: red", "unknown budget field"),
        ("- id: a\n  scope: tenant=acme\n  limit_usd: 1\n- id: a\n  scope: tenant=acme\n  limit_usd: 2", "duplicate"),
        ("- 5", "must be a mapping"),
    ],
)
def test_yaml_errors_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        budgets_from_yaml(text)


def test_updated_at_round_trips() -> None:
    b = Budget.from_cli("b", scope="tenant=acme", limit_usd="1").model_copy(update={"updated_at_ms": 1_700_000_000_000})
    assert Budget.from_json(b.to_json()).updated_at_ms == 1_700_000_000_000
