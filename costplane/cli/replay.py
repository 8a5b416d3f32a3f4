"""``costplane replay FILE.jsonl``: publish usage events from JSON lines through the real publisher.

For backfills, load tests and reproducing incidents. Invalid lines are reported with their line numbers and
reasons and skipped (``--strict`` stops at the first one instead). Exit status: 0 all published, 1 some lines
skipped, 2 stopped by ``--strict``, 3 the file could not be read.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from costplane.cli.output import console, print_json


@dataclass(slots=True)
class ReplaySummary:
    published: int = 0
    skipped: list[dict[str, object]] = field(default_factory=list)


def register(app: typer.Typer) -> None:
    app.command(name="replay")(replay)


def _lines(path: str) -> tuple[IO[str], int | None]:
    if path == "-":
        return sys.stdin, None
    p = Path(path)
    total = sum(1 for _ in p.open(encoding="utf-8"))
    return p.open(encoding="utf-8"), total


def replay(
    file: str = typer.Argument(..., help="JSON-lines file of usage events (schema field names), or - for stdin."),
    rate: float = typer.Option(0.0, "--rate", help="Events per second (0 = as fast as possible)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first invalid line (exit status 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Publish usage events from a JSON-lines file through the publisher, with a progress bar."""
    from costplane.publisher import UsagePublisher
    from costplane.publisher.jsonio import event_from_json_dict
    from costplane.publisher.validation import InvalidEvent

    err = console(stderr=True)
    try:
        stream, total = _lines(file)
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(3) from None
    summary = ReplaySummary()
    publisher = UsagePublisher()
    started = time.monotonic()
    stopped = False
    progress = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, disable=as_json)
    with progress, stream:
        task = progress.add_task("replay", total=total)
        for number, line in enumerate(stream, start=1):
            progress.advance(task)
            if not line.strip():
                continue
            try:
                event = event_from_json_dict(json.loads(line))
            except (json.JSONDecodeError, InvalidEvent, TypeError) as exc:
                reason = exc.reason if isinstance(exc, InvalidEvent) else "bad_json"
                message = exc.message if isinstance(exc, InvalidEvent) else str(exc)
                summary.skipped.append({"line": number, "reason": reason, "message": message})
                if not as_json:
                    err.print(f"line {number}: [yellow]{reason}[/] — {message}")
                if strict:
                    stopped = True
                    break
                continue
            publisher.emit(event)
            summary.published += 1
            if rate > 0:
                ahead = summary.published / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    publisher.close()
    undelivered = publisher.stats()["spool_bytes"]
    if as_json:
        print_json({"published": summary.published, "skipped": summary.skipped, "stopped": stopped,
                    "spooled_bytes": undelivered})
    else:
        console().print(f"published {summary.published} events, skipped {len(summary.skipped)} lines"
                        + (f", {undelivered} bytes waiting in the spool" if undelivered else ""))
    if stopped:
        raise typer.Exit(2)
    if summary.skipped:
        raise typer.Exit(1)
