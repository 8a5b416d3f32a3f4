"""``costplane alerts tail``: watch the alerts topic live, as lines for people or JSON lines for machines.

Reads ``<prefix>.alerts`` with its own throw-away consumer group (it never commits, so it never moves anyone's
offsets), from the end by default or ``--from-beginning``. ``--max`` and ``--idle-timeout`` make it usable in
scripts and tests; without them it runs until Ctrl-C.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import typer

from costplane.cli.output import console, print_json
from costplane.cli.tail import RecordView, Undecodable, tail_command

if TYPE_CHECKING:
    from costplane.streams.alerting.model import AlertEvent

alerts_app = typer.Typer(help="Alerts raised by the detectors: watch them live.", no_args_is_help=True)

_ACTION_STYLE = {"trigger": "bold red", "resolve": "bold green"}
_SEVERITY_STYLE = {"critical": "red", "warning": "yellow", "info": "cyan"}


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


def alert_line(event: AlertEvent) -> str:
    """One rich-markup line per alert: time, action, severity, kind, tenant, summary, top contributor, runbook."""
    from rich.markup import escape

    from costplane.streams.alerting.format import iso, usd

    action = "ESCALATE" if event.escalated else event.action.upper()
    style = _ACTION_STYLE.get(event.action, "")
    sev = _SEVERITY_STYLE.get(event.severity, "")
    subject = " ".join(f"{k}={v}" for k, v in sorted(event.subject.items()))
    top = ""
    if event.contributors:
        c = event.contributors[0]
        top = f" · top {c.dimension}={c.value} {usd(c.cost_nanos)}"
    return (
        f"{iso(event.occurred_at_ms)} [{style}]{action:<8}[/] [{sev}]{event.severity:<8}[/] "
        f"[bold]{escape(event.kind)}[/] {escape(event.tenant)} {escape(subject)} — {escape(event.summary)}"
        f"{escape(top)} [dim]{escape(event.runbook)} key={escape(event.dedup_key)}[/]"
    )


def _view(tenant: str | None) -> RecordView[AlertEvent]:
    from costplane.streams.alerting.model import alert_to_json_dict

    return RecordView(
        decode=_decode,
        keep=lambda event: tenant is None or event.tenant == tenant,
        line=alert_line,
        as_json=alert_to_json_dict,
        missing_topic="does not exist yet; waiting for the first alert",
    )


alerts_app.command("tail")(
    tail_command(
        "alerts",
        _view,
        noun="alert",
        plural="alerts",
        json_help="One JSON object per alert (the alert.avsc fields).",
        doc="Print alerts as they arrive on the alerts topic (Ctrl-C to stop).",
    )
)


def _decode(value: bytes | None, headers: Any) -> AlertEvent:
    from costplane.streams.alerting.codec import AlertDecodeError, decode_alert

    try:
        return decode_alert(value, headers)
    except AlertDecodeError as exc:
        raise Undecodable(str(exc)) from None


@alerts_app.command("test")
def test_delivery(
    tenant: str = typer.Option("costplane-test", "--tenant", help="Tenant named in the test alert."),
    severity: str = typer.Option("critical", "--severity", help="info, warning or critical (routing applies)."),
    resolve: bool = typer.Option(True, "--resolve/--no-resolve", help="Also send the resolve after the trigger."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    route: bool = typer.Option(False, "--route", help="Only show which targets the alert would reach (send nothing)."),
    kind: str = typer.Option("test", "--kind", help="Alert kind, for routing (e.g. budget_block)."),
    team: str | None = typer.Option(None, "--team", help="Team in the alert's subject, for routing."),
    feature: str | None = typer.Option(None, "--feature", help="Feature in the alert's subject, for routing."),
) -> None:
    """Send a test alert to every target it routes to (COSTPLANE_ALERTS_*) and show what each receiver answered.

    Exit status: 0 every delivery succeeded (targets whose minimum severity or routes exclude the alert are
    skipped), 1 some failed, 2 no target is configured. ``--route`` sends nothing: it lists where the alert would go.
    """
    import asyncio

    from costplane.config import AlertSettings, load_settings
    from costplane.streams.alerting.delivery import policy_from_settings, targets_from_settings

    if severity not in ("info", "warning", "critical"):
        raise typer.BadParameter("must be info, warning or critical", param_hint="--severity")
    settings = load_settings(AlertSettings)
    targets = targets_from_settings(settings)
    if not targets:
        console(stderr=True).print(
            "[yellow]no alert target configured: set COSTPLANE_ALERTS_SLACK_WEBHOOK_URL, "
            "_PAGERDUTY_ROUTING_KEY or _WEBHOOK_URLS[/]"
        )
        raise typer.Exit(2)
    import structlog

    # The table (or JSON) reports every outcome; keep the delivery log lines from mixing into stdout.
    subject = {k: v for k, v in (("team", team), ("feature", feature)) if v}
    if route:
        probe = _test_event(tenant, severity, kind, subject)
        reached = [t.name for t in targets if t.wants(probe)]
        if as_json:
            print_json({"tenant": tenant, "kind": kind, "severity": severity, **subject, "targets": reached})
        else:
            console().print(
                f"{kind} ({severity}) for {tenant}{''.join(f', {k} {v}' for k, v in subject.items())}"
                f" → {', '.join(reached) if reached else 'no target'}"
            )
        return
    with structlog.testing.capture_logs():
        rows = asyncio.run(
            _send_test(targets, policy_from_settings(settings), tenant, severity, resolve, kind, subject)
        )
    if as_json:
        print_json(rows)
    else:
        from rich.table import Table

        table = Table(title="test alert deliveries")
        for column in ("target", "action", "delivered", "attempts", "status", "error"):
            table.add_column(column)
        for row in rows:
            delivered = {True: "yes", False: "[red]no[/]", None: "skipped"}[row["delivered"]]
            table.add_row(
                str(row["target"]),
                str(row["action"]),
                delivered,
                str(row["attempts"]),
                str(row["status"] or ""),
                str(row["error"] or ""),
            )
        console().print(table)
    if any(row["delivered"] is False for row in rows):
        raise typer.Exit(1)


def _test_event(tenant: str, severity: str, kind: str, subject: dict[str, str]) -> Any:
    from costplane.streams.alerting.model import AlertEvent

    now = time.time_ns() // 1_000_000
    return AlertEvent(
        alert_id=str(uuid.uuid4()),
        dedup_key=f"test:{tenant}:{uuid.uuid4().hex[:8]}",
        kind=kind,
        action="trigger",
        severity="critical" if severity == "critical" else "warning" if severity == "warning" else "info",
        tenant=tenant,
        summary="Test alert from costplane alerts test: delivery works, nothing to do.",
        window_start_ms=now - 60_000,
        window_end_ms=now,
        occurred_at_ms=now,
        subject=dict(subject),
        numbers={"test": "1"},
        suggested_action="None: this is a test.",
        runbook="docs/alerts.md#delivery",
    )


async def _send_test(
    targets: list[Any],
    policy: Any,
    tenant: str,
    severity: str,
    resolve: bool,
    kind: str = "test",
    subject: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    import dataclasses

    import httpx

    from costplane.streams.alerting.delivery import send_with_retries

    trigger = _test_event(tenant, severity, kind, subject or {})
    events = [trigger]
    if resolve:
        events.append(
            dataclasses.replace(
                trigger, action="resolve", alert_id=str(uuid.uuid4()), summary="Resolved: " + trigger.summary
            )
        )
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient() as client:
        for target in targets:
            for event in events:
                if not target.wants(event):
                    rows.append(
                        {
                            "target": target.name,
                            "action": event.action,
                            "delivered": None,
                            "attempts": 0,
                            "status": None,
                            "error": "skipped: below the target's minimum severity, or not routed to it",
                        }
                    )
                    continue
                result = await send_with_retries(client, target, event, policy)
                letter = result.dead_letter
                rows.append(
                    {
                        "target": target.name,
                        "action": event.action,
                        "delivered": result.ok,
                        "attempts": result.attempts,
                        "status": result.status,
                        "error": letter.error if letter else None,
                    }
                )
    return rows
