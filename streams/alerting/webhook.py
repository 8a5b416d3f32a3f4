"""Generic JSON webhook body: the alert exactly as on the alerts topic (Avro field names, epoch millis).

Receivers deduplicate on ``alert_id`` (a retried delivery repeats it) and group on ``dedup_key``.
"""

from __future__ import annotations

from typing import Any

from costplane.streams.alerting.format import runbook_url
from costplane.streams.alerting.model import AlertEvent, alert_to_json_dict


def webhook_body(event: AlertEvent, runbook_base_url: str | None = None) -> dict[str, Any]:
    """``{"schema": "costplane.alert.v1", "alert": {...}}`` with the runbook made absolute when a base is set."""
    alert = alert_to_json_dict(event)
    alert["runbook"] = runbook_url(event, runbook_base_url)
    return {"schema": "costplane.alert.v1", "alert": alert}
