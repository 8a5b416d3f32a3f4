"""Read every budget member's standing from the live Redis state (the I/O half of :mod:`costplane.budget_status`).

Budgets come from each tenant's published set (``{prefix}:{tenant}:budgets``, what the guard enforces), members
from the counters and decisions under them; the raw values are read in one pipeline and interpreted by the pure
module. ``ledgers`` adds what ClickHouse holds for the same windows (``--reconcile``, the worker's drift metric).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from costplane.budget_status import MemberStatus, ledger_dimensions, ledger_totals, member_status
from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.store import parse_budgets

#: What runs a report: (ReportOptions) → its rows (``costplane.cli.report.collect`` or the sink's own report).
ReportRunner = Callable[[Any], list[dict[str, Any]]]


class UnknownScope(LookupError):
    """``--tenant`` or ``--budget`` names nothing Redis holds (the message says which)."""


def _glob(text: str) -> str:
    """``text`` as a literal inside a Redis SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def tenants(client: redis.Redis | RedisCluster, keys: KeyLayout) -> list[str]:
    """Tenants with a published budget set."""
    head, tail = f"{keys.prefix}:{{", "}:budgets"
    found = {
        _text(k)[len(head) : -len(tail)]
        for k in client.scan_iter(match=f"{_glob(keys.prefix)}:{{*}}:budgets", count=1000)
    }
    return sorted(t for t in found if t)


def _members(client: redis.Redis | RedisCluster, keys: KeyLayout, tenant: str, budget_id: str) -> list[str]:
    members: set[str] = set()
    for kind in ("spent", "decision"):
        base = keys.spent(tenant, budget_id, "") if kind == "spent" else keys.decision(tenant, budget_id, "")
        for key in client.scan_iter(match=_glob(base) + "*", count=1000):
            members.add(_text(key)[len(base) :])
    return sorted(members)


def read_status(
    client: redis.Redis | RedisCluster,
    keys: KeyLayout,
    now_ms: int,
    *,
    tenant: str | None = None,
    budget_id: str | None = None,
) -> list[MemberStatus]:
    """One row per budget member, sorted by tenant, budget and member. Raises :class:`UnknownScope`."""
    names = [tenant] if tenant is not None else tenants(client, keys)
    pairs: list[tuple[str, Budget]] = []
    for name in names:
        budgets = parse_budgets(name, client.hgetall(keys.budgets(name)))
        pairs += [(name, b) for b in sorted(budgets, key=lambda b: b.id) if budget_id in (None, b.id)]
    if tenant is not None and not client.exists(keys.budgets(tenant)):
        raise UnknownScope(f"no budgets are published for tenant {tenant!r}")
    if budget_id is not None and not pairs:
        where = f" of tenant {tenant!r}" if tenant else ""
        raise UnknownScope(f"no budget {budget_id!r}{where} is published")
    wanted: list[tuple[str, Budget, str]] = [(t, b, m) for t, b in pairs for m in _members(client, keys, t, b.id)]
    pipe = client.pipeline(transaction=False)
    for t, b, m in wanted:
        pipe.hgetall(keys.spent(t, b.id, m))
        pipe.get(keys.decision(t, b.id, m))
    raw: Sequence[Any] = pipe.execute() if wanted else []
    return [member_status(b, t, m, raw[2 * i] or {}, raw[2 * i + 1], now_ms) for i, (t, b, m) in enumerate(wanted)]


def budgets_of(
    statuses: Sequence[MemberStatus], client: redis.Redis | RedisCluster, keys: KeyLayout
) -> dict[tuple[str, str], Budget]:
    """The budget definitions behind ``statuses`` (``(tenant, id)`` → budget)."""
    out: dict[tuple[str, str], Budget] = {}
    for tenant in sorted({s.tenant for s in statuses}):
        for b in parse_budgets(tenant, client.hgetall(keys.budgets(tenant))):
            out[(tenant, b.id)] = b
    return out


def ledgers(
    statuses: Sequence[MemberStatus], budgets: dict[tuple[str, str], Budget], run: ReportRunner
) -> dict[tuple[str, str], dict[str, int]]:
    """Per (tenant, budget), the ledger spend of each member over the same window as its counter.

    One spend report per budget, grouped by the budget's scope dimensions, limited to its tenant and window (the
    reports answer whole minutes: a rolling-1m window's 5-second edge is read to the minute). A tenant the ledger
    has never seen has spent nothing there.
    """
    from costplane.budget_status import iso
    from costplane.reports.errors import ReportError
    from costplane.reports.options import ReportOptions

    out: dict[tuple[str, str], dict[str, int]] = {}
    windows = {(s.tenant, s.budget_id): (s.window_start_ms, s.window_end_ms) for s in statuses}
    for (tenant, budget_id), (start, end) in sorted(windows.items()):
        budget = budgets.get((tenant, budget_id))
        if budget is None:
            continue
        options = ReportOptions.parse(
            "spend", since=iso(start), until=iso(end), tenant=tenant, by=list(ledger_dimensions(budget))
        )
        try:
            out[(tenant, budget_id)] = ledger_totals(budget, run(options))
        except ReportError as exc:
            if "no tenant" not in str(exc):
                raise
            out[(tenant, budget_id)] = {}
    return out
