"""``costplane import FILE``: load usage history (weeks or months old) into ClickHouse through the backfill topic.

Live events older than the clock-skew limit are dead-lettered by the stream role; history therefore goes to
``<prefix>.usage.backfill``, which only the sink reads: priced at each event's own ``occurred_at``, deduplicated by
``event_id`` with the live events (an event imported twice is written once), never counted into a budget window.
Exit status: 0 all imported; 1 some lines rejected (each reported with its reason); 2 bad arguments or an
unreadable file; 3 the broker did not acknowledge everything (nothing is spooled: run the import again).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import typer

from costplane.cli.output import console, print_json

EXIT_REJECTED, EXIT_USAGE, EXIT_UNDELIVERED = 1, 2, 3
#: Events per Kafka message (one tenant's, in file order), as the publisher batches them.
BATCH_EVENTS = 500


def register(app: typer.Typer) -> None:
    app.command(name="import")(import_history)


def _fail(message: str) -> typer.Exit:
    console(stderr=True).print(f"[red]{message}[/]")
    return typer.Exit(EXIT_USAGE)


def publish_history(events: Iterable[Any], kafka: Any, *, timeout_s: float = 60.0) -> tuple[int, int]:
    """Send events to the backfill topic in per-tenant batches; returns (acknowledged, not acknowledged)."""
    from confluent_kafka import Producer

    from costplane.publisher.codec import UsageCodec

    codec = (
        UsageCodec.with_registry(kafka.schema_registry_url) if kafka.schema_registry_url else UsageCodec.schemaless()
    )
    producer = Producer(
        {
            **kafka.confluent_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    topic = kafka.topic("usage.backfill")
    outcome = {"ok": 0, "failed": 0}
    pending: dict[str, list[Any]] = {}

    def send(tenant: str, batch: list[Any]) -> None:
        value, headers = codec.encode_batch(tenant, batch)

        def delivered(err: Any, _msg: Any, n: int = len(batch)) -> None:
            outcome["failed" if err is not None else "ok"] += n

        while True:
            try:
                producer.produce(
                    topic,
                    key=tenant.encode(),
                    value=value,
                    headers=list(headers),  # type: ignore[arg-type]
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    count = 0
    for event in events:
        count += 1
        batch = pending.setdefault(event.tenant, [])
        batch.append(event)
        if len(batch) >= BATCH_EVENTS:
            send(event.tenant, batch)
            pending[event.tenant] = []
    for tenant, batch in pending.items():
        if batch:
            send(tenant, batch)
    producer.flush(timeout_s)
    return outcome["ok"], count - outcome["ok"]  # failed, or still unacknowledged at the timeout


def import_history(
    file: str = typer.Argument(..., help="History file, or - for stdin."),
    fmt: str = typer.Option(
        "jsonl",
        "--format",
        "-f",
        help="jsonl (usage events, schema field names), openai-usage-csv (OpenAI's usage "
        "export), litellm-spendlogs (LiteLLM_SpendLogs rows as CSV or JSON lines).",
    ),
    tenant: str | None = typer.Option(
        None, "--tenant", help="Tenant of lines that name none (required for openai-usage-csv)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Parse and report; send nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Import usage history into ClickHouse (via the backfill topic the worker's sink reads).

    Each rejected line is reported with its number and reason and the rest still goes in. Importing a file again
    adds nothing: lines without an event_id get one derived from their content.

    Exit status: 0 all sent; 1 lines rejected; 2 bad arguments or an unreadable file; 3 not everything was
    acknowledged by the broker (run it again).
    """
    from costplane.integrations.history import FORMATS, Rejected, parse_history

    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        stream: IO[str] = (
            sys.stdin
            if file == "-"
            else Path(file).open(  # noqa: SIM115 - closed by the with below
                encoding="utf-8", errors="replace"
            )
        )
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    rejected: list[Rejected] = []
    counted = {"events": 0}

    def events() -> Iterator[Any]:
        """The file's events, read as they are sent (a long history is never held in memory whole)."""
        for item in parse_history(stream, fmt, tenant=tenant):
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                counted["events"] += 1
                yield item

    sent, failed = 0, 0
    with stream:
        if dry_run:
            for _ in events():
                pass
        else:
            from costplane.config import KafkaSettings, load_settings

            sent, failed = publish_history(events(), load_settings(KafkaSettings))
    summary = {
        "read": counted["events"] + len(rejected),
        "events": counted["events"],
        "sent": sent,
        "failed": failed,
        "rejected": [r.as_dict() for r in rejected],
        "dry_run": dry_run,
    }
    if as_json:
        print_json(summary)
    else:
        err = console(stderr=True)
        for r in rejected:
            err.print(f"line {r.line}: [yellow]{r.reason}[/] — {r.message}")
        verb = "parsed" if dry_run else "sent to the backfill topic"
        console().print(
            f"{counted['events']} events {verb}, {len(rejected)} lines rejected"
            + (f", {failed} events not acknowledged" if failed else "")
        )
    if failed:
        raise typer.Exit(EXIT_UNDELIVERED)
    if rejected:
        raise typer.Exit(EXIT_REJECTED)
