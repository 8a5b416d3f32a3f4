"""The budget file format of ``costplane budget apply``: the CLI's fields, validated before anything is written."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from costplane.budgets import Budget, BudgetError

DOC = """
budgets:
  - id: acme-users
    scope: tenant=acme,user=*
    period: day
    tz: Europe/Paris
    limit_tokens: 10000
    soft: [0.5, 0.8]
    action: degrade:gpt-4o-mini
  - id: acme-month
    scope: {tenant: acme}
    period: month
    limit_usd: "250.50"
"""


def test_yaml_entries_become_budgets() -> None:
    items = yaml.safe_load(DOC)["budgets"]
    users, month = (Budget.from_mapping(item) for item in items)
    assert users.scope == {"tenant": "acme", "user": "*"} and users.tz == "Europe/Paris"
    assert users.unit == "tokens" and users.limit == 10_000 and users.soft == (0.5, 0.8)
    assert users.degrade_model == "gpt-4o-mini"
    assert month.unit == "usd" and month.limit == 250_500_000_000  # exact nano-USD


@pytest.mark.parametrize(
    "item",
    [
        {"id": "x", "scope": "user=*", "limit_tokens": 1},  # no tenant
        {"id": "x", "scope": "tenant=a", "limit_tokens": 1, "limit_usd": "1"},  # two limits
        {"id": "x", "scope": "tenant=a", "limit_tokens": 1, "period": "fortnight"},
        {"id": "x", "scope": "tenant=a", "limit_tokens": 1, "soft": [1.5]},
        {"id": "x", "scope": "tenant=a", "limit_tokens": 1, "action": "explode"},
    ],
)
def test_invalid_entries_are_refused(item: dict[str, object]) -> None:
    with pytest.raises((BudgetError, ValidationError, ValueError)):
        Budget.from_mapping(item)
