"""In-app enforcement: BudgetGuard, the Redis store with its Lua scripts, and an in-memory store for tests."""

from costplane.enforcers.guard import AsyncBudgetGuard, BudgetGuard, Reservation
from costplane.enforcers.memory import InMemoryBudgetStore
from costplane.enforcers.plan import Answer
from costplane.enforcers.policy import CircuitBreaker, FailurePolicy
from costplane.enforcers.store import AsyncRedisBudgetStore, RedisBudgetStore

__all__ = [
    "Answer",
    "AsyncBudgetGuard",
    "AsyncRedisBudgetStore",
    "BudgetGuard",
    "CircuitBreaker",
    "FailurePolicy",
    "InMemoryBudgetStore",
    "RedisBudgetStore",
    "Reservation",
]
