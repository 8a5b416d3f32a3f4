"""PagerDuty Events API v2: build trigger/resolve events from alerts and validate them against the field rules.

The rules (PagerDuty's Events API v2 reference) that :func:`validate_pagerduty_event` enforces:

* ``routing_key``: the integration key, a 32-character string; ``event_action``: trigger | acknowledge | resolve;
* ``dedup_key``: at most 255 characters; required for acknowledge and resolve (a trigger without one gets a
  PagerDuty-generated key, which costplane never relies on);
* a trigger needs ``payload`` with ``summary`` (1..1024 characters), ``source`` and ``severity`` in
  critical | error | warning | info; optional ``timestamp`` (ISO 8601), ``component``, ``group``, ``class``
  (strings) and ``custom_details`` (an object);
* optional ``links`` ([{href, text?}]), ``images`` ([{src, href?, alt?}]), ``client``, ``client_url``;
* a resolve needs only routing_key, event_action and dedup_key.

The sink validates every event before sending: an event PagerDuty would reject with 400 becomes a dead letter at
once instead of being retried.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costplane.streams.alerting.format import iso, runbook_url, usd
from costplane.streams.alerting.model import AlertEvent

EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
_TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
MAX_DEDUP_KEY, MAX_SUMMARY, ROUTING_KEY_LENGTH = 255, 1024, 32
_NANO = Decimal("0.000000001")


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def validate_pagerduty_event(event: Any) -> list[str]:
    """Every way ``event`` breaks the Events API v2 rules; an empty list means PagerDuty will accept it."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    problems = [f"unknown top-level field {k!r}" for k in sorted(set(event) - _TOP_LEVEL)]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != ROUTING_KEY_LENGTH:
        problems.append(f"routing_key must be a {ROUTING_KEY_LENGTH}-character string")
    action = event.get("event_action")
    if action not in EVENT_ACTIONS:
        problems.append(f"event_action must be one of {', '.join(EVENT_ACTIONS)}")
    dedup = event.get("dedup_key")
    if dedup is None:
        if action in ("acknowledge", "resolve"):
            problems.append(f"dedup_key is required for {action}")
    elif not isinstance(dedup, str) or not dedup:
        problems.append("dedup_key must be a non-empty string")
    elif len(dedup) > MAX_DEDUP_KEY:
        problems.append(f"dedup_key is {len(dedup)} characters; at most {MAX_DEDUP_KEY} allowed")
    payload = event.get("payload")
    if action == "trigger" or payload is not None:
        problems += _payload_problems(payload)
    problems += _list_problems(event, "links", required="href", allowed={"href", "text"})
    problems += _list_problems(event, "images", required="src", allowed={"src", "href", "alt"})
    for name in ("client", "client_url"):
        if name in event and not _is_str(event[name]):
            problems.append(f"{name} must be a string")
    return problems


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["payload (an object with summary, source, severity) is required for trigger"]
    problems = [f"unknown payload field {k!r}" for k in sorted(set(payload) - _PAYLOAD)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        problems.append("payload.summary is required (a non-empty string)")
    elif len(summary) > MAX_SUMMARY:
        problems.append(f"payload.summary is {len(summary)} characters; at most {MAX_SUMMARY} allowed")
    source = payload.get("source")
    if not _is_str(source) or not source:
        problems.append("payload.source is required (a non-empty string)")
    if payload.get("severity") not in PD_SEVERITIES:
        problems.append(f"payload.severity must be one of {', '.join(PD_SEVERITIES)}")
    for name in ("timestamp", "component", "group", "class"):
        if name in payload and not _is_str(payload[name]):
            problems.append(f"payload.{name} must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        problems.append("payload.custom_details must be an object")
    return problems


def _list_problems(event: dict[str, Any], name: str, required: str, allowed: set[str]) -> list[str]:
    if name not in event:
        return []
    items = event[name]
    if not isinstance(items, list):
        return [f"{name} must be a list"]
    problems: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not _is_str(item.get(required)):
            problems.append(f"{name}[{i}].{required} is required (a string)")
        elif set(item) - allowed:
            problems.append(f"{name}[{i}] has unknown fields {sorted(set(item) - allowed)}")
    return problems


def pagerduty_event(
    event: AlertEvent,
    routing_key: str,
    *,
    source: str = "costplane",
    runbook_base_url: str | None = None,
    max_contributors: int = 5,
) -> dict[str, Any]:
    """The Events v2 body for one alert: trigger with payload and links, or a bare resolve."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": event.action,
        "dedup_key": event.dedup_key[:MAX_DEDUP_KEY],
    }
    if event.action == "resolve":
        return body
    summary = f"{event.kind} ({event.tenant}): {event.summary}"
    details: dict[str, Any] = {
        "tenant": event.tenant,
        "window": f"{iso(event.window_start_ms)} → {iso(event.window_end_ms)}",
        "subject": dict(event.subject),
        "numbers": dict(event.numbers),
        "top_contributors": [
            {
                "dimension": c.dimension,
                "value": c.value,
                "cost_usd": str((Decimal(c.cost_nanos) / 10**9).quantize(_NANO)),
                "cost": usd(c.cost_nanos),
                "tokens": c.tokens,
                "attempts": c.attempts,
            }
            for c in event.contributors[:max_contributors]
        ],
        "suggested_action": event.suggested_action,
        "runbook": runbook_url(event, runbook_base_url),
        "alert_id": event.alert_id,
        "escalated": event.escalated,
    }
    body["payload"] = {
        "summary": summary[:MAX_SUMMARY],
        "source": source,
        "severity": event.severity,  # costplane's info|warning|critical are all PagerDuty severities
        "timestamp": iso(event.occurred_at_ms),
        "component": event.subject.get("feature") or event.subject.get("model") or event.tenant,
        "group": event.tenant,
        "class": event.kind,
        "custom_details": details,
    }
    link = runbook_url(event, runbook_base_url)
    if link.startswith(("https://", "http://")):  # PagerDuty renders links; a repo-relative path would not resolve
        body["links"] = [{"href": link, "text": f"Runbook: {event.kind}"}]
    body["client"] = "costplane"
    return body
