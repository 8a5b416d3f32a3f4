"""Where every budget stands: one row per budget and member, computed from what Redis holds (pure logic, no I/O).

The guard's counter hash of a member already carries everything: settled spend per bucket, the reservations that
still hold budget, and the stream's decision beside it. This module reads those raw values the way the scripts
mean them (docs/enforcement.md, "Fields of a budget counter") so ``costplane budget status``, the worker's
``/api/budgets/status`` and the worker's drift metric all say the same thing.

Drift is the counter minus the ledger (what ClickHouse holds for the same member and window): the counter is
what enforcement acts on, the ledger is what was billed; a counter that silently drifts from the ledger is a
budget that enforces the wrong number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costplane.budgets.model import Budget
from costplane.budgets.windows import window_for

#: Token measures of the spend report whose sum a token budget counts (the worker's ``event_tokens``).
TOKEN_MEASURES = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One budget member's standing. Amounts are in the budget's unit: integer nano-USD or tokens."""

    tenant: str
    budget_id: str
    member: str
    unit: str
    period: str
    spent: int
    limit: int
    window_start_ms: int
    window_end_ms: int
    open_reservations: int
    reserved: int
    action: str | None = None
    decision_until_ms: int | None = None
    reason: str | None = None
    ledger_spent: int | None = None

    @property
    def used(self) -> float:
        """Spent as a fraction of the limit (a display value: the amounts themselves stay integers)."""
        return self.spent / self.limit if self.limit else 0.0

    @property
    def drift(self) -> int | None:
        """Counter − ledger (positive: enforcement counts more than was billed); None before a reconcile."""
        return None if self.ledger_spent is None else self.spent - self.ledger_spent

    @property
    def drift_fraction(self) -> float | None:
        """Drift relative to the ledger (0 when both are 0; None when only the ledger is 0)."""
        drift = self.drift
        if drift is None or self.ledger_spent is None:
            return None
        if self.ledger_spent == 0:
            return 0.0 if drift == 0 else None
        return drift / self.ledger_spent

    def with_ledger(self, ledger_spent: int) -> MemberStatus:
        return replace(self, ledger_spent=ledger_spent)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (money also as an exact USD decimal string for USD budgets; times as ISO 8601 UTC)."""
        out: dict[str, Any] = asdict(self)
        out["used"] = round(self.used, 6)
        out["window_end"] = iso(self.window_end_ms)
        out["decision_until"] = iso(self.decision_until_ms) if self.decision_until_ms is not None else None
        if self.unit == "usd":
            out["spent_usd"] = usd(self.spent)
            out["limit_usd"] = usd(self.limit)
        if self.ledger_spent is not None:
            out["drift"] = self.drift
            fraction = self.drift_fraction
            out["drift_fraction"] = None if fraction is None else round(fraction, 6)
        return out


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usd(nanos: int) -> str:
    return format(Decimal(nanos).scaleb(-9), "f")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def member_status(
    budget: Budget, tenant: str, member: str, counter: Mapping[Any, Any], decision: str | bytes | None, now_ms: int
) -> MemberStatus:
    """A member's row from its raw counter hash and decision value as Redis returns them.

    Spent sums the settled buckets inside the window containing ``now_ms`` (a bucket the window has left may
    still be in the hash until the next sweep). A reservation holds budget while its ``r<expiry>:<id>`` record has
    not expired; ``z`` records hold nothing.
    """
    window = window_for(budget.period, budget.tz, now_ms)
    spent = open_count = reserved = 0
    for raw_field, raw_value in counter.items():
        name = _text(raw_field)
        if name.isdigit():
            if window.start_ms <= int(name) < window.end_ms:
                spent += int(_text(raw_value))
        elif name.startswith("r"):
            expiry, _, _rid = name[1:].partition(":")
            if expiry.isdigit() and int(expiry) > now_ms:
                open_count += 1
                reserved += int(_text(raw_value))
    action = until = reason = None
    if decision is not None:
        try:
            record = json.loads(decision)
            action = str(record.get("action"))
            until = int(record.get("until_ms") or record.get("window_end_ms") or 0) or None
            reason = record.get("reason")
        except (ValueError, TypeError, AttributeError):
            action = "unreadable"
    return MemberStatus(
        tenant=tenant,
        budget_id=budget.id,
        member=member,
        unit=budget.unit,
        period=budget.period,
        spent=spent,
        limit=budget.limit,
        window_start_ms=window.start_ms,
        window_end_ms=window.end_ms,
        open_reservations=open_count,
        reserved=reserved,
        action=action,
        decision_until_ms=until,
        reason=reason,
    )


def ledger_dimensions(budget: Budget) -> tuple[str, ...]:
    """The spend report's ``--by`` dimensions that identify a member of ``budget`` (the scope's own names)."""
    return tuple(budget.scope)


def ledger_totals(budget: Budget, rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Per member, the spend in the budget's unit from spend-report rows grouped by :func:`ledger_dimensions`
    (rows already limited to the member's window and tenant)."""
    totals: dict[str, int] = {}
    for row in rows:
        attrs = {d: None if row.get(d) is None else str(row[d]) for d in budget.scope}
        member = budget.member_of(attrs)
        if member is None:
            continue
        amount = int(row["cost_nanos"]) if budget.unit == "usd" else sum(int(row[m]) for m in TOKEN_MEASURES)
        totals[member] = totals.get(member, 0) + amount
    return totals


def reconcile(
    statuses: Iterable[MemberStatus], ledgers: Mapping[tuple[str, str], Mapping[str, int]]
) -> list[MemberStatus]:
    """Each status with its ledger spend (``ledgers[(tenant, budget_id)][member]``, 0 when the ledger has none)."""
    return [s.with_ledger(ledgers.get((s.tenant, s.budget_id), {}).get(s.member, 0)) for s in statuses]


def drift_by_budget(statuses: Iterable[MemberStatus]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """``(tenant, budget, unit)`` → (Σ drift, members whose counter differs from the ledger): the worker's gauges."""
    out: dict[tuple[str, str, str], tuple[int, int]] = {}
    for s in statuses:
        drift = s.drift
        if drift is None:
            continue
        total, members = out.get((s.tenant, s.budget_id, s.unit), (0, 0))
        out[(s.tenant, s.budget_id, s.unit)] = (total + drift, members + (1 if drift else 0))
    return out
