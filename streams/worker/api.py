"""What the worker's ``/api/*`` pages answer, apart from the web framework: the token check, budget status,
recent decisions and the drift measurement. ``streams/app.py`` only routes to these.
"""

from __future__ import annotations

import hmac
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import redis
from redis.cluster import RedisCluster

from costplane.budget_status import MemberStatus, drift_by_budget, reconcile
from costplane.budget_status_redis import budgets_of, ledgers, read_status
from costplane.enforcers.keys import KeyLayout

#: Decisions the stream role keeps in memory for ``/api/decisions/recent`` (newest last).
RECENT_DECISIONS = 1000


def authorized(header: str | None, token: str | None) -> bool:
    """With a token configured, the request must carry ``Authorization: Bearer <token>`` (constant-time compare)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def query_values(query_string: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query_string).items()}


#: The sink's ``/api/report`` callable: query string → the report object (``ReportResult.to_json()``).
Report = Callable[[str], Any]


def budget_status(
    client: redis.Redis | RedisCluster, keys: KeyLayout, now_ms: int, query_string: str, report: Report | None
) -> list[dict[str, Any]]:
    """``GET /api/budgets/status?tenant=&budget=&reconcile=1``: the rows of ``costplane budget status --format json``.

    Raises ``UnknownScope`` (→ 404) and ``ValueError`` (→ 400, e.g. reconcile on a worker without ClickHouse).
    """
    values = query_values(query_string)
    rows = read_status(
        client, keys, now_ms, tenant=values.get("tenant") or None, budget_id=values.get("budget") or None
    )
    if values.get("reconcile", "") in ("1", "true", "yes") and rows:
        if report is None:
            raise ValueError("reconcile needs the worker that owns ClickHouse (role sink or all)")
        rows = reconciled(client, keys, rows, report)
    return [r.to_json() for r in rows]


def reconciled(
    client: redis.Redis | RedisCluster, keys: KeyLayout, rows: Sequence[MemberStatus], report: Report
) -> list[MemberStatus]:
    """Rows with the ledger beside them, the ledger read through the sink's own report function."""
    from costplane.streams.sink.query import ReportResult

    def run(options: Any) -> list[dict[str, Any]]:
        return ReportResult.from_json(report(options.to_query_string())).rows

    return reconcile(rows, ledgers(rows, budgets_of(rows, client, keys), run))


def measure_drift(
    client: redis.Redis | RedisCluster, keys: KeyLayout, now_ms: int, report: Report
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Every published budget's drift, for the ``costplane_budget_drift`` gauges."""
    rows = read_status(client, keys, now_ms)
    return drift_by_budget(reconciled(client, keys, rows, report)) if rows else {}


class RecentDecisions:
    """The last :data:`RECENT_DECISIONS` decision records this process wrote (bounded, newest last)."""

    def __init__(self, size: int = RECENT_DECISIONS) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, record_json: str) -> None:
        self._items.append(json.loads(record_json))

    def query(self, query_string: str) -> list[dict[str, Any]]:
        """``GET /api/decisions/recent?tenant=&limit=``: newest first. Raises ValueError on a bad limit."""
        values = query_values(query_string)
        tenant = values.get("tenant") or None
        limit = int(values.get("limit", "100"))
        if limit < 1:
            raise ValueError("limit must be at least 1")
        chosen = [r for r in reversed(self._items) if tenant is None or r.get("tenant") == tenant]
        return chosen[:limit]
