"""``costplane replay`` without a broker: line parsing, skip/strict exit statuses, pacing, JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli import replay as replay_cmd
from costplane.cli.main import build_app
from costplane.publisher.jsonio import event_to_json_dict
from costplane.publisher.testing import InMemoryPublisher
from costplane.synthetic import generate


def _lines(n: int = 5) -> list[str]:
    return [json.dumps(event_to_json_dict(e)) for e in generate(n, seed=7)]


def test_parse_lines_reports_numbers_and_reasons() -> None:
    good = _lines(3)
    iso = dict(json.loads(good[2]), occurred_at="2026-01-02T03:04:05.678Z")
    text = [
        good[0],
        "",
        '{"tenant": ',
        json.dumps({"tenant": "acme"}),
        good[1],
        json.dumps(dict(json.loads(good[1]), output_tokens=-1)),
        json.dumps(dict(json.loads(good[1]), colour=1)),
        json.dumps(iso),
    ]
    parsed = list(replay_cmd.parse_lines(text))
    bad = [(n, item.reason) for n, item in parsed if isinstance(item, replay_cmd.BadLine)]
    assert bad == [(3, "bad_json"), (4, "missing_field"), (6, "negative_tokens"), (7, "unknown_field")]
    events = [item for _n, item in parsed if not isinstance(item, replay_cmd.BadLine)]
    assert [n for n, item in parsed if not isinstance(item, replay_cmd.BadLine)] == [1, 5, 8]
    assert events[2].occurred_at == 1767323045678


def test_run_replay_paces_to_the_rate() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    pub = InMemoryPublisher()
    summary = replay_cmd.run_replay(_lines(10), pub, rate=5, clock=lambda: now[0], sleep=sleep)
    assert summary.published == 10 and summary.exit_code == 0 and pub.closed
    assert now[0] == pytest.approx(2.0)  # 10 events at 5/s


@pytest.fixture
def in_memory(monkeypatch: pytest.MonkeyPatch) -> InMemoryPublisher:
    pub = InMemoryPublisher()
    monkeypatch.setattr(replay_cmd, "_default_publisher", lambda: pub)
    return pub


def test_cli_skips_bad_lines_with_exit_status_1(tmp_path: Path, in_memory: InMemoryPublisher) -> None:
    path = tmp_path / "e.jsonl"
    lines = _lines(6)
    lines.insert(2, "not json")
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(build_app(), ["replay", str(path), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["published"] == 6 and [s["line"] for s in summary["skipped"]] == [3]
    assert len(in_memory.events) == 6 and in_memory.closed


def test_cli_strict_stops_with_exit_status_2(tmp_path: Path, in_memory: InMemoryPublisher) -> None:
    path = tmp_path / "e.jsonl"
    lines = _lines(6)
    lines.insert(3, json.dumps({"event_id": "nope"}))
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(build_app(), ["replay", str(path), "--strict"])
    assert result.exit_code == 2
    assert "line 4" in result.output and len(in_memory.events) == 3


def test_cli_clean_file_exits_0_and_reads_non_utf8_as_a_bad_line(tmp_path: Path, in_memory: InMemoryPublisher) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(_lines(4)) + "\n")
    assert CliRunner().invoke(build_app(), ["replay", str(path)]).exit_code == 0
    line = json.loads(_lines(1)[0])
    line["feature"] = "caf\udce9"
    path.write_bytes(json.dumps(line, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
    result = CliRunner().invoke(build_app(), ["replay", str(path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped"][0]["reason"] == "not_utf8"


def test_cli_missing_file_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["replay", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 3 and "cannot read" in result.output


@pytest.mark.parametrize("depth", [100, 5_000, 200_000])
def test_deeply_nested_lines_are_reported_not_raised(depth: int) -> None:
    """Before: a line of 5 000 nested brackets raised RecursionError out of replay (a traceback, exit 1)."""
    good = _lines(1)[0]
    parsed = list(replay_cmd.parse_lines(["[" * depth + "]" * depth, good, '{"a":' * depth + "1" + "}" * depth]))
    shallow = depth == 100  # Python's parser reads it: then it is simply not an event
    assert [(n, getattr(item, "reason", "event")) for n, item in parsed] == [
        (1, "bad_shape" if shallow else "bad_json"),
        (2, "event"),
        (3, "unknown_field" if shallow else "bad_json"),
    ]


def test_replay_exit_status_when_several_apply_is_as_documented() -> None:
    """docs/publisher.md: 2 (--strict stopped) before 1 (lines skipped) before 4 (spooled)."""
    from costplane.cli.replay import BadLine, ReplaySummary

    bad = [BadLine(3, "bad_json", "not JSON")]
    assert ReplaySummary(skipped=bad, stopped=True, spooled_bytes=10).exit_code == 2
    assert ReplaySummary(skipped=bad, spooled_bytes=10).exit_code == 1
    assert ReplaySummary(spooled_bytes=10).exit_code == 4
    assert ReplaySummary(published=5).exit_code == 0
