"""In-app enforcement: BudgetGuard, the Redis store with its Lua scripts, and an in-memory store for tests."""

from costplane.enforcers.guard import AsyncBudgetGuard, BudgetGuard, Reservation
from costplane.enforcers.memory import InMemoryBudgetStore
from costplane.enforcers.plan import Answer
from costplane.enforcers.policy import CircuitBreaker, FailurePolicy
from costplane.enforcers.store import AsyncBudgetStore, AsyncRedisBudgetStore, BudgetStore, RedisBudgetStore

__all__ = [
    "Answer",
    "AsyncBudgetGuard",
    "AsyncBudgetStore",
    "AsyncRedisBudgetStore",
    "BudgetGuard",
    "BudgetStore",
    "CircuitBreaker",
    "FailurePolicy",
    "InMemoryBudgetStore",
    "RedisBudgetStore",
    "Reservation",
]
