"""Budget definitions shared by the in-app guard and the stream worker: model, scope matching, window math.

Pure: no I/O, an explicit ``at_ms`` everywhere (the caller's clock), so both sides agree on which window a call or
an event belongs to.
"""

from costplane.budgets.model import (
    Budget,
    BudgetError,
    Unit,
    budgets_from_yaml,
    parse_scope,
    per_user_token_budgets_by_plan,
)
from costplane.budgets.windows import Window, WindowCache, bucket_for, window_for

__all__ = [
    "Budget",
    "BudgetError",
    "Unit",
    "Window",
    "WindowCache",
    "bucket_for",
    "budgets_from_yaml",
    "parse_scope",
    "per_user_token_budgets_by_plan",
    "window_for",
]
