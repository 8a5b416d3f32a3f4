"""Following a topic from the command line: what ``alerts tail`` and ``decisions tail`` share.

Each reads with a throw-away consumer group of its own (nothing is committed, so nobody's offsets move), from the
end or ``--from-beginning``, and stops after ``--max`` records or ``--idle-timeout`` seconds without one (else at
Ctrl-C). The commands differ only in how a record is decoded, filtered and shown, which they pass in.

(No ``from __future__ import annotations`` here: Typer reads the annotations of :func:`tail_command`'s closure
at registration.)
"""

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import typer

from costplane.cli.output import console, print_json

T = TypeVar("T")


class Undecodable(ValueError):
    """A record the tail cannot show; the message says why (it is printed with the record's offset)."""


@dataclass(frozen=True, slots=True)
class TailOptions:
    """How long to follow and from where."""

    from_beginning: bool = False
    max_records: int | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RecordView(Generic[T]):
    """What a tail does with one record: decode it (or raise :class:`Undecodable`), keep it or not, and show it
    as a line for people (``markup``: rich markup in the line) or as a JSON object."""

    decode: Callable[[bytes | None, Any], T]
    keep: Callable[[T], bool]
    line: Callable[[T], str]
    as_json: Callable[[T], Any]
    markup: bool = True
    missing_topic: str | None = None  # said once while the topic does not exist yet; None: wait silently


def follow(
    poll: Callable[[], Any],
    handle: Callable[[Any], bool],
    options: TailOptions,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Poll until ``max_records`` records were shown or ``idle_timeout`` passed without one; the number shown.

    ``poll`` returns a message or None; ``handle`` shows a message and says whether it counted as a record.
    """
    shown, last = 0, clock()
    while options.max_records is None or shown < options.max_records:
        if options.idle_timeout is not None and clock() - last > options.idle_timeout:
            break
        message = poll()
        if message is None or not handle(message):
            continue
        last = clock()
        shown += 1
    return shown


def tail_command(
    kind: str, view: Callable[[str | None], "RecordView[Any]"], *, noun: str, plural: str, json_help: str, doc: str
) -> Callable[..., None]:
    """The ``tail`` command of ``<prefix>.<kind>``: its options (help worded with ``noun``), then :func:`tail_topic`
    with the record view ``view(tenant)``."""

    def command(
        tenant: Annotated[str | None, typer.Option("--tenant", help=f"Only this tenant's {plural}.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help=json_help)] = False,
        from_beginning: Annotated[
            bool, typer.Option("--from-beginning", help=f"Start at the oldest retained {noun}.")
        ] = False,
        max_records: Annotated[
            int | None, typer.Option("--max", min=1, help=f"Exit after printing this many {noun}s.")
        ] = None,
        idle_timeout: Annotated[
            float | None,
            typer.Option("--idle-timeout", min=0.1, help=f"Exit after this many seconds without a new {noun}."),
        ] = None,
    ) -> None:
        tail_topic(kind, view(tenant), TailOptions(from_beginning, max_records, idle_timeout), as_json)

    command.__doc__ = doc
    return command


def tail_topic(kind: str, view: RecordView[T], options: TailOptions, as_json: bool) -> None:
    """Print the records of ``<prefix>.<kind>`` as they arrive (Ctrl-C to stop)."""
    from confluent_kafka import Consumer

    from costplane.config import KafkaSettings, load_settings

    kafka = load_settings(KafkaSettings)
    topic = kafka.topic(kind)
    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"costplane-{kind}-tail-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if options.from_beginning else "latest",
            "topic.metadata.refresh.interval.ms": 5000,
        }
    )
    consumer.subscribe([topic])
    if not as_json:
        console(stderr=True).print(
            f"[dim]tailing {topic} on {kafka.bootstrap_servers}"
            f"{' from the beginning' if options.from_beginning else ''} (Ctrl-C to stop)[/]"
        )
    try:
        follow(lambda: consumer.poll(0.5), _Printer(topic, view, as_json), options)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


class _Printer(Generic[T]):
    """Shows one consumed message: Kafka's notices on stderr, skipped records with their offset, kept records on
    stdout."""

    def __init__(self, topic: str, view: RecordView[T], as_json: bool) -> None:
        self.topic, self.view, self.as_json = topic, view, as_json
        self.err, self.out = console(stderr=True), console()
        self.warned_missing = False

    def __call__(self, message: Any) -> bool:
        error = message.error()
        if error is not None:
            self._kafka_error(error)
            return False
        try:
            record = self.view.decode(message.value(), message.headers())
        except Undecodable as exc:
            self.err.print(f"[yellow]skipped offset {message.partition()}:{message.offset()}: {exc}[/]")
            return False
        if not self.view.keep(record):
            return False
        if self.as_json:
            print_json(self.view.as_json(record))
        else:
            self.out.print(self.view.line(record), soft_wrap=True, markup=self.view.markup)
            sys.stdout.flush()
        return True

    def _kafka_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            if self.view.missing_topic is not None and not self.warned_missing:
                self.err.print(f"[yellow]{self.topic} {self.view.missing_topic}[/]")
                self.warned_missing = True
            return
        if error.code() != KafkaError._PARTITION_EOF:
            self.err.print(f"[red]kafka: {error.str()}[/]")
