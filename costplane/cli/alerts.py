"""``costplane alerts tail``: watch the alerts topic live, as lines for people or JSON lines for machines.

Reads ``<prefix>.alerts`` with its own throw-away consumer group (it never commits, so it never moves anyone's
offsets), from the end by default or ``--from-beginning``. ``--max`` and ``--idle-timeout`` make it usable in
scripts and tests; without them it runs until Ctrl-C.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING

import typer

from costplane.cli.output import console, print_json

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
    return (f"{iso(event.occurred_at_ms)} [{style}]{action:<8}[/] [{sev}]{event.severity:<8}[/] "
            f"[bold]{escape(event.kind)}[/] {escape(event.tenant)} {escape(subject)} — {escape(event.summary)}"
            f"{escape(top)} [dim]{escape(event.runbook)} key={escape(event.dedup_key)}[/]")


@alerts_app.command("tail")
def tail(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's alerts."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per alert (the alert.avsc fields)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest retained alert."),
    max_alerts: int | None = typer.Option(None, "--max", min=1, help="Exit after printing this many alerts."),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", min=0.1, help="Exit after this many seconds without a new alert."),
) -> None:
    """Print alerts as they arrive on the alerts topic (Ctrl-C to stop)."""
    from confluent_kafka import Consumer, KafkaError

    from costplane.config import KafkaSettings, load_settings
    from costplane.streams.alerting.codec import AlertDecodeError, decode_alert
    from costplane.streams.alerting.model import alert_to_json_dict

    kafka = load_settings(KafkaSettings)
    topic = kafka.topic("alerts")
    err = console(stderr=True)
    out = console()
    consumer = Consumer({
        **kafka.confluent_config(),
        "group.id": f"costplane-alerts-tail-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "topic.metadata.refresh.interval.ms": 5000,
    })
    consumer.subscribe([topic])
    if not as_json:
        err.print(f"[dim]tailing {topic} on {kafka.bootstrap_servers}"
                  f"{' from the beginning' if from_beginning else ''} (Ctrl-C to stop)[/]")
    printed, warned_missing = 0, False
    last_alert = time.monotonic()
    try:
        while max_alerts is None or printed < max_alerts:
            if idle_timeout is not None and time.monotonic() - last_alert > idle_timeout:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    if not warned_missing:
                        err.print(f"[yellow]{topic} does not exist yet; waiting for the first alert[/]")
                        warned_missing = True
                    continue
                if error.code() != KafkaError._PARTITION_EOF:
                    err.print(f"[red]kafka: {error.str()}[/]")
                continue
            try:
                event = decode_alert(msg.value(), msg.headers())
            except AlertDecodeError as exc:
                err.print(f"[yellow]skipped offset {msg.partition()}:{msg.offset()}: {exc}[/]")
                continue
            if tenant is not None and event.tenant != tenant:
                continue
            last_alert = time.monotonic()
            printed += 1
            if as_json:
                print_json(alert_to_json_dict(event))
            else:
                out.print(alert_line(event), soft_wrap=True)
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
