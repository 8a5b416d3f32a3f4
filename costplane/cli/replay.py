"""``costplane replay FILE.jsonl``: publish usage events from JSON lines through the real publisher.

For backfills, load tests and reproducing incidents. Invalid lines are reported with their line numbers and
reasons and skipped (``--strict`` stops at the first one instead). Exit status: 0 all published, 1 some lines
skipped, 2 stopped by ``--strict``, 3 the file could not be read, 4 the broker did not take everything (the rest
waits in the local spool and is delivered by the next publisher run on it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from costplane.cli.output import console, print_json

if TYPE_CHECKING:
    from costplane.publisher.event import UsageEvent

EXIT_SKIPPED, EXIT_STRICT, EXIT_UNREADABLE, EXIT_SPOOLED = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "reason": self.reason, "message": self.message}


@dataclass(slots=True)
class ReplaySummary:
    published: int = 0
    skipped: list[BadLine] = field(default_factory=list)
    stopped: bool = False
    spooled_bytes: int = 0

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return EXIT_STRICT
        if self.skipped:
            return EXIT_SKIPPED
        if self.spooled_bytes:
            return EXIT_SPOOLED
        return 0

    def as_dict(self) -> dict[str, object]:
        return {
            "published": self.published,
            "skipped": [s.as_dict() for s in self.skipped],
            "stopped": self.stopped,
            "spooled_bytes": self.spooled_bytes,
            "exit_code": self.exit_code,
        }


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, UsageEvent | BadLine]]:
    """Each non-blank line as a validated event or the reason it is not one (pure: no publishing)."""
    from costplane.publisher.jsonio import event_from_json_dict
    from costplane.publisher.validation import InvalidEvent

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, BadLine(number, "bad_json", f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        except UnicodeDecodeError as exc:
            yield number, BadLine(number, "not_utf8", str(exc))
            continue
        except RecursionError:  # Python's parser recurses per nesting level; no event nests more than twice
            yield number, BadLine(number, "bad_json", "not JSON this tool can read: nested too deeply")
            continue
        try:
            yield number, event_from_json_dict(data)
        except InvalidEvent as exc:
            yield number, BadLine(number, exc.reason, exc.message)
        except TypeError as exc:  # e.g. a wrongly typed attributes map the dataclass cannot take
            yield number, BadLine(number, "bad_shape", str(exc))


class ReplayPublisher(Protocol):
    """What replay needs of a publisher (``UsagePublisher`` and ``InMemoryPublisher`` both fit)."""

    def emit(self, event: UsageEvent) -> bool: ...
    def close(self, timeout: float | None = None) -> None: ...
    def stats(self) -> dict[str, Any]: ...


def _default_publisher() -> ReplayPublisher:
    from costplane.publisher import UsagePublisher

    return UsagePublisher()


def run_replay(
    lines: Iterable[str],
    publisher: ReplayPublisher,
    *,
    rate: float = 0.0,
    strict: bool = False,
    on_line: Callable[[int, BadLine | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplaySummary:
    """Publish every valid line; ``rate`` > 0 paces to that many events per second. Closes the publisher."""
    summary = ReplaySummary()
    started = clock()
    try:
        for number, item in parse_lines(lines):
            if isinstance(item, BadLine):
                summary.skipped.append(item)
                if on_line:
                    on_line(number, item)
                if strict:
                    summary.stopped = True
                    break
                continue
            if publisher.emit(item):
                summary.published += 1
            else:  # refused by the publisher itself (it validates too); never expected after parse_lines
                summary.skipped.append(BadLine(number, "refused", "the publisher refused the event"))
            if on_line:
                on_line(number, None)
            if rate > 0:
                ahead = summary.published / rate - (clock() - started)
                if ahead > 0:
                    sleep(ahead)
    finally:
        publisher.close()
    summary.spooled_bytes = int(publisher.stats().get("spool_bytes", 0))
    return summary


def register(app: typer.Typer) -> None:
    app.command(name="replay")(replay)


def _open(path: str) -> tuple[IO[str], int | None]:
    if path == "-":
        return sys.stdin, None
    p = Path(path)
    with p.open(encoding="utf-8", errors="surrogateescape") as fh:
        total = sum(1 for _ in fh)
    return p.open(encoding="utf-8", errors="surrogateescape"), total


def replay(
    file: str = typer.Argument(..., help="JSON-lines file of usage events (schema field names), or - for stdin."),
    rate: float = typer.Option(0.0, "--rate", min=0, help="Events per second (0 = as fast as possible)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first invalid line (exit status 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Publish usage events from a JSON-lines file through the publisher, with a progress bar.

    `occurred_at` may be epoch millis or ISO-8601.

    Exit status: 0 all published; 1 lines skipped; 2 stopped by --strict; 3 file unreadable;
    4 part of it waits in the local spool (broker unreachable).
    """
    err = console(stderr=True)
    try:
        stream, total = _open(file)
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(EXIT_UNREADABLE) from None
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, disable=as_json
    )

    with progress, stream:
        task = progress.add_task("replay", total=total)

        def on_line(number: int, bad: BadLine | None) -> None:
            progress.update(task, completed=number)
            if bad is not None and not as_json:
                err.print(f"line {bad.line}: [yellow]{bad.reason}[/] — {bad.message}")

        summary = run_replay(stream, _default_publisher(), rate=rate, strict=strict, on_line=on_line)
    if as_json:
        print_json(summary.as_dict())
    else:
        console().print(
            f"published {summary.published} events, skipped {len(summary.skipped)} lines"
            + (" (stopped by --strict)" if summary.stopped else "")
            + (f", {summary.spooled_bytes} bytes waiting in the local spool" if summary.spooled_bytes else "")
        )
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
