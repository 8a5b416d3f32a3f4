"""The alert record: what the lifecycle emits, the alerts topic carries and every sink formats.

Times are epoch milliseconds (ints) end to end, numbers are exact decimal strings, money is integer nano-USD:
the same rules as the usage events, so an alert can be checked against ClickHouse to the nano-dollar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from costplane.streams.core.findings import Contributor, Severity

Action = Literal["trigger", "resolve"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
ACTIONS: tuple[Action, ...] = ("trigger", "resolve")


def severity_rank(severity: str) -> int:
    """Order of severities (info < warning < critical); unknown values rank lowest."""
    for rank, name in enumerate(SEVERITIES):
        if name == severity:
            return rank
    return -1


@dataclass(slots=True, frozen=True)
class AlertEvent:
    """One lifecycle event of one incident (see ``schemas/alert.avsc`` for every field's meaning)."""

    alert_id: str
    dedup_key: str
    kind: str
    action: Action
    severity: Severity
    tenant: str
    summary: str
    window_start_ms: int
    window_end_ms: int
    occurred_at_ms: int
    subject: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)
    contributors: tuple[Contributor, ...] = ()
    suggested_action: str = ""
    runbook: str = ""
    escalated: bool = False


def contributor_to_dict(c: Contributor) -> dict[str, Any]:
    return {
        "dimension": c.dimension,
        "value": c.value,
        "cost_nanos": c.cost_nanos,
        "tokens": c.tokens,
        "attempts": c.attempts,
    }


def contributor_from_dict(d: dict[str, Any]) -> Contributor:
    return Contributor(
        dimension=str(d["dimension"]),
        value=str(d["value"]),
        cost_nanos=int(d.get("cost_nanos", 0)),
        tokens=int(d.get("tokens", 0)),
        attempts=int(d.get("attempts", 0)),
    )


def alert_to_json_dict(event: AlertEvent) -> dict[str, Any]:
    """The JSON form: the Avro field names (times as epoch millis), used by webhooks and ``alerts tail --json``."""
    return {
        "alert_id": event.alert_id,
        "dedup_key": event.dedup_key,
        "kind": event.kind,
        "action": event.action,
        "escalated": event.escalated,
        "severity": event.severity,
        "tenant": event.tenant,
        "subject": dict(event.subject),
        "summary": event.summary,
        "window_start": event.window_start_ms,
        "window_end": event.window_end_ms,
        "numbers": dict(event.numbers),
        "contributors": [contributor_to_dict(c) for c in event.contributors],
        "suggested_action": event.suggested_action,
        "runbook": event.runbook,
        "occurred_at": event.occurred_at_ms,
    }


def alert_from_json_dict(d: dict[str, Any]) -> AlertEvent:
    """Inverse of :func:`alert_to_json_dict` (also reads the Avro record, whose field names are the same)."""
    action = str(d["action"])
    severity = str(d["severity"])
    by_name: dict[str, Severity] = {name: name for name in SEVERITIES}
    if action not in ACTIONS:
        raise ValueError(f"unknown alert action {action!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown alert severity {severity!r}")
    return AlertEvent(
        alert_id=str(d["alert_id"]),
        dedup_key=str(d["dedup_key"]),
        kind=str(d["kind"]),
        action="trigger" if action == "trigger" else "resolve",
        escalated=bool(d.get("escalated", False)),
        severity=by_name[severity],
        tenant=str(d["tenant"]),
        subject={str(k): str(v) for k, v in (d.get("subject") or {}).items()},
        summary=str(d["summary"]),
        window_start_ms=int(d["window_start"]),
        window_end_ms=int(d["window_end"]),
        numbers={str(k): str(v) for k, v in (d.get("numbers") or {}).items()},
        contributors=tuple(contributor_from_dict(c) for c in d.get("contributors") or ()),
        suggested_action=str(d.get("suggested_action", "")),
        runbook=str(d.get("runbook", "")),
        occurred_at_ms=int(d["occurred_at"]),
    )
