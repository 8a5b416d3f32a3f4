"""The tail loop shared by ``alerts tail`` and ``decisions tail``: when it stops, what it shows and skips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError

from costplane.cli.tail import RecordView, TailOptions, Undecodable, _Printer, follow


class Clock:
    """A clock that moves only when told: one second per poll here."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _poller(script: list[Any], clock: Clock) -> Any:
    items: Iterator[Any] = iter(script)

    def poll() -> Any:
        clock.now += 1.0
        return next(items, None)

    return poll


def test_follow_stops_after_max_records_counting_only_handled_ones() -> None:
    clock = Clock()
    shown = follow(_poller([1, "skip", 2, 3, 4], clock), lambda m: m != "skip", TailOptions(max_records=3), clock)
    assert shown == 3


def test_follow_stops_when_idle_longer_than_the_timeout_since_the_last_record() -> None:
    clock = Clock()
    polls: list[float] = []

    def poll() -> Any:
        clock.now += 1.0
        polls.append(clock.now)
        return "x" if clock.now == 2.0 else None

    assert follow(poll, lambda m: True, TailOptions(idle_timeout=2.5), clock) == 1
    # The record at t=2 restarts the idle time: polls continue until t - 2 > 2.5, i.e. the check at t=5 stops it.
    assert polls == [1.0, 2.0, 3.0, 4.0, 5.0]


@dataclass
class Message:
    payload: bytes | None = None
    err: Any = None

    def error(self) -> Any:
        return self.err

    def value(self) -> bytes | None:
        return self.payload

    def headers(self) -> Any:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def _decode(value: bytes | None, headers: Any) -> Any:
    try:
        return json.loads(value or b"")
    except ValueError:
        raise Undecodable("not json") from None


VIEW = RecordView(
    decode=_decode,
    keep=lambda r: r.get("tenant") == "acme",
    line=lambda r: f"line {r['n']}",
    as_json=lambda r: r,
    markup=False,
    missing_topic="does not exist yet",
)


def test_printer_shows_kept_records_and_names_skipped_offsets(capsys: pytest.CaptureFixture[str]) -> None:
    printer = _Printer("p.t", VIEW, as_json=False)
    assert printer(Message(b'{"tenant": "acme", "n": 1}')) is True
    assert printer(Message(b'{"tenant": "other", "n": 2}')) is False
    assert printer(Message(b"garbage")) is False
    out, err = capsys.readouterr()
    assert out == "line 1\n"
    assert "skipped offset 0:7: not json" in err


def test_printer_json_and_kafka_notices(capsys: pytest.CaptureFixture[str]) -> None:
    printer = _Printer("p.t", VIEW, as_json=True)
    missing = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert printer(Message(err=missing)) is False
    assert printer(Message(err=missing)) is False
    assert printer(Message(err=KafkaError(KafkaError._PARTITION_EOF))) is False
    assert printer(Message(b'{"tenant": "acme", "n": 3}')) is True
    out, err = capsys.readouterr()
    assert json.loads(out) == {"tenant": "acme", "n": 3}
    assert err.count("p.t does not exist yet") == 1 and "kafka:" not in err
