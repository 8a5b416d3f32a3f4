"""Slack incoming-webhook message for an alert: a fallback ``text`` plus Block Kit blocks.

Slack renders ``blocks`` and uses ``text`` for notifications and clients without blocks; both carry the summary.
Limits respected: section text ≤ 3000 characters, at most 10 fields per section, ≤ 50 blocks.
"""

from __future__ import annotations

from typing import Any

from costplane.streams.alerting.format import iso, runbook_url, usd
from costplane.streams.alerting.model import AlertEvent

_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
_MAX_TEXT = 3000


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(event: AlertEvent) -> str:
    """One line: ``[TRIGGERED] critical retry_storm (acme): …``; also the notification text."""
    state = "RESOLVED" if event.action == "resolve" else "ESCALATED" if event.escalated else "TRIGGERED"
    return f"[{state}] {event.severity} {event.kind} ({event.tenant}): {event.summary}"


def slack_message(event: AlertEvent, runbook_base_url: str | None = None, max_contributors: int = 5) -> dict[str, Any]:
    """The JSON body to POST to a Slack incoming webhook."""
    icon = ":white_check_mark:" if event.action == "resolve" else _ICON.get(event.severity, "")
    text = _clip(f"{icon} {headline(event)}".strip())
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    context = [f"*tenant* {event.tenant}", f"*window* {iso(event.window_start_ms)} → {iso(event.window_end_ms)}"]
    context += [f"*{k}* {v}" for k, v in sorted(event.subject.items())]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(context))}]})
    if event.numbers:
        fields = [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in sorted(event.numbers.items())]
        for i in range(0, min(len(fields), 20), 10):  # Slack allows 10 fields per section
            blocks.append({"type": "section", "fields": fields[i : i + 10]})
    if event.contributors:
        lines = [
            f"• `{c.dimension}={c.value}` {usd(c.cost_nanos)}, {c.tokens:,} tokens, {c.attempts:,} attempts"
            for c in event.contributors[:max_contributors]
        ]
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip("*Top contributors*\n" + "\n".join(lines))}}
        )
    link = runbook_url(event, runbook_base_url)
    action = f"*Suggested action:* {event.suggested_action}\n" if event.suggested_action else ""
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"{action}*Runbook:* <{link}>")}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"dedup `{event.dedup_key}` · alert `{event.alert_id}`"}],
        }
    )
    return {"text": text, "blocks": blocks}
