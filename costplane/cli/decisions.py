"""``costplane decisions tail``: follow the decisions topic — blocks, degrades, lifts and threshold notices.

Reads without joining a consumer group (nothing is committed), from the end by default or ``--from-beginning``.
Lines for people, or the records themselves as JSON lines (``--json``).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import typer

from costplane.cli.output import console, print_json

decisions_app = typer.Typer(help="Enforcement decisions written by the stream worker.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(decisions_app, name="decisions")


def decision_line(record: dict[str, Any]) -> str:
    """One decision record as a line: when, what, who, why."""
    from costplane.budget_status import iso

    at = iso(int(record.get("at_ms") or 0))
    kind = record.get("type", "?")
    action = record.get("action", "?")
    what = action if kind == "decision" else f"{kind} {action}" if kind == "lift" else kind
    until = record.get("until_ms")
    tail = f" until {iso(int(until))}" if kind == "decision" and until else ""
    return (
        f"{at}  {what:<16} {record.get('budget_id', '?')}  {record.get('member', '?')}{tail}  "
        f"— {record.get('reason', '')}"
    )


@decisions_app.command("tail")
def tail(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's decisions."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record (as the worker wrote it)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest retained record."),
    max_records: int | None = typer.Option(None, "--max", min=1, help="Exit after printing this many records."),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", min=0.1, help="Exit after this many seconds without a new record."
    ),
) -> None:
    """Print decisions as the stream worker writes them (Ctrl-C to stop)."""
    from confluent_kafka import Consumer, KafkaError

    from costplane.config import KafkaSettings, load_settings

    kafka = load_settings(KafkaSettings)
    topic = kafka.topic("decisions")
    err, out = console(stderr=True), console()
    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"costplane-decisions-tail-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "topic.metadata.refresh.interval.ms": 5000,
        }
    )
    consumer.subscribe([topic])
    if not as_json:
        err.print(
            f"[dim]tailing {topic} on {kafka.bootstrap_servers}"
            f"{' from the beginning' if from_beginning else ''} (Ctrl-C to stop)[/]"
        )
    printed, last = 0, time.monotonic()
    try:
        while max_records is None or printed < max_records:
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    err.print(f"[red]kafka: {error.str()}[/]")
                continue
            try:
                record = json.loads(msg.value() or b"")
            except ValueError:
                err.print(f"[yellow]skipped offset {msg.partition()}:{msg.offset()}: not a decision record[/]")
                continue
            if not isinstance(record, dict) or (tenant is not None and record.get("tenant") != tenant):
                continue
            last = time.monotonic()
            printed += 1
            if as_json:
                print_json(record)
            else:
                out.print(decision_line(record), soft_wrap=True, markup=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
