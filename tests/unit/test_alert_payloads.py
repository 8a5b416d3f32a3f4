"""Slack, PagerDuty and webhook bodies, and the PagerDuty Events v2 validator on good and bad events."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from costplane.streams.alerting.format import runbook_url, usd
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.pagerduty import pagerduty_event, validate_pagerduty_event
from costplane.streams.alerting.slack import slack_message
from costplane.streams.alerting.webhook import webhook_body
from costplane.streams.core.findings import Contributor

KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
EVENT = AlertEvent(
    alert_id="a1",
    dedup_key="retry_storm:acme:chat:gpt-4o",
    kind="retry_storm",
    action="trigger",
    severity="critical",
    tenant="acme",
    summary="18% of attempts are retries (threshold 5%)",
    window_start_ms=1_790_000_000_000,
    window_end_ms=1_790_000_060_000,
    occurred_at_ms=1_790_000_061_000,
    subject={"feature": "chat", "model": "gpt-4o"},
    numbers={"retry_ratio": "0.18", "threshold": "0.05"},
    contributors=(
        Contributor("user_id", "u-17", 12_345_678_901, 9_000, 40),
        Contributor("feature", "chat", 500_000_000, 100, 2),
    ),
    suggested_action="Check the provider's status; cap retries.",
    runbook="docs/runbook.md#retry-storm",
)
RESOLVE = replace(EVENT, action="resolve", alert_id="a2", summary="Resolved: " + EVENT.summary)


def test_pagerduty_trigger_is_valid_and_carries_the_evidence() -> None:
    body = pagerduty_event(EVENT, KEY, runbook_base_url="https://docs.example/costplane/")
    assert validate_pagerduty_event(body) == []
    assert body["event_action"] == "trigger" and body["dedup_key"] == EVENT.dedup_key
    payload = body["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "costplane"
    assert payload["custom_details"]["numbers"] == {"retry_ratio": "0.18", "threshold": "0.05"}
    assert payload["custom_details"]["top_contributors"][0]["cost_usd"] == "12.345678901"
    assert body["links"][0]["href"] == "https://docs.example/costplane/docs/runbook.md#retry-storm"
    assert payload["custom_details"]["top_contributors"][1]["cost_usd"] == "0.500000000"
    assert "links" not in pagerduty_event(EVENT, KEY)  # a repo-relative runbook path is no link PagerDuty can open
    assert pagerduty_event(EVENT, KEY)["payload"]["custom_details"]["runbook"] == "docs/runbook.md#retry-storm"
    json.dumps(body)  # plain JSON


def test_pagerduty_resolve_is_minimal() -> None:
    body = pagerduty_event(RESOLVE, KEY)
    assert body == {"routing_key": KEY, "event_action": "resolve", "dedup_key": EVENT.dedup_key}
    assert validate_pagerduty_event(body) == []


def test_pagerduty_clips_long_summary_and_dedup_key() -> None:
    long = replace(EVENT, summary="x" * 5000, dedup_key="k" * 400)
    body = pagerduty_event(long, KEY)
    assert len(body["payload"]["summary"]) == 1024 and len(body["dedup_key"]) == 255
    assert validate_pagerduty_event(body) == []


def _good() -> dict[str, Any]:
    return pagerduty_event(EVENT, KEY)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda e: e.update(routing_key="short"), "routing_key"),
        (lambda e: e.pop("routing_key"), "routing_key"),
        (lambda e: e.update(event_action="page"), "event_action"),
        (lambda e: e.update(dedup_key="k" * 256), "dedup_key is 256"),
        (lambda e: e.update(dedup_key=""), "dedup_key must be"),
        (lambda e: e.pop("payload"), "payload"),
        (lambda e: e["payload"].update(summary="s" * 1025), "payload.summary is 1025"),
        (lambda e: e["payload"].pop("summary"), "payload.summary is required"),
        (lambda e: e["payload"].pop("source"), "payload.source"),
        (lambda e: e["payload"].update(severity="high"), "payload.severity"),
        (lambda e: e["payload"].update(custom_details="text"), "custom_details"),
        (lambda e: e["payload"].update(timestamp=123), "payload.timestamp"),
        (lambda e: e["payload"].update(colour="red"), "unknown payload field"),
        (lambda e: e.update(links=[{"text": "no href"}]), "links[0].href"),
        (lambda e: e.update(images="x"), "images must be a list"),
        (lambda e: e.update(extra=1), "unknown top-level"),
        (lambda e: e.update(event_action="resolve", dedup_key=None), "dedup_key is required for resolve"),
    ],
)
def test_validator_names_every_broken_rule(mutate: Any, problem: str) -> None:
    event = copy.deepcopy(_good())
    mutate(event)
    problems = validate_pagerduty_event(event)
    assert any(problem in p for p in problems), problems


def test_validator_accepts_the_documented_minimal_events() -> None:
    trigger = {
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {"summary": "disk full", "source": "db-1", "severity": "error"},
    }
    assert validate_pagerduty_event(trigger) == []
    assert validate_pagerduty_event({"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "d"}) == []
    assert validate_pagerduty_event("not an object") == ["event must be a JSON object"]


def test_slack_message_has_summary_numbers_contributors_and_runbook() -> None:
    msg = slack_message(EVENT, runbook_base_url="https://docs.example")
    assert msg["text"].startswith(":rotating_light: [TRIGGERED] critical retry_storm (acme)")
    flat = json.dumps(msg)
    assert "retry_ratio" in flat and "0.18" in flat
    assert "`user_id=u-17` $12.345678901, 9,000 tokens, 40 attempts" in flat
    assert "<https://docs.example/docs/runbook.md#retry-storm>" in flat
    assert "Check the provider" in flat
    for block in msg["blocks"]:
        assert len(block.get("fields", [])) <= 10
    assert slack_message(RESOLVE)["text"].startswith(":white_check_mark: [RESOLVED]")
    assert "[ESCALATED]" in slack_message(replace(EVENT, escalated=True))["text"]


def test_slack_message_clips_to_slack_limits() -> None:
    msg = slack_message(replace(EVENT, summary="y" * 10_000, numbers={f"n{i}": "1" for i in range(30)}))
    assert all(len(b["text"]["text"]) <= 3000 for b in msg["blocks"] if "text" in b)
    assert all(len(b.get("fields", [])) <= 10 for b in msg["blocks"])


def test_webhook_body_is_the_alert_record() -> None:
    body = webhook_body(EVENT)
    assert body["schema"] == "costplane.alert.v1"
    assert body["alert"]["dedup_key"] == EVENT.dedup_key and body["alert"]["window_start"] == EVENT.window_start_ms
    assert body["alert"]["contributors"][0] == {
        "dimension": "user_id",
        "value": "u-17",
        "cost_nanos": 12_345_678_901,
        "tokens": 9000,
        "attempts": 40,
    }


def test_money_and_links_format_exactly() -> None:
    assert usd(1) == "$0.000000001" and usd(1_500_000_000) == "$1.50" and usd(0) == "$0.00"
    assert runbook_url(replace(EVENT, runbook=""), None) == "docs/runbook.md#retry-storm"
    assert runbook_url(replace(EVENT, runbook="https://x/y#z"), "https://base") == "https://x/y#z"
