"""`costplane detectors set/reset/apply` refuse bad input in one line with exit 2, before reading or publishing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), ["detectors", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "--tenant", "acme", "colour=red"], "invalid thresholds: unknown detector setting 'colour'"),
        (["set", "--tenant", "acme", "retry_ratio=abc"], "retry_ratio must be a decimal number, not 'abc'"),
        (["set", "--tenant", "acme", "min_retries=1.5"], "min_retries must be a whole number"),
        (["set", "--tenant", "acme", "retry_ratio"], "expected key=value, got 'retry_ratio'"),
        (["set", "--tenant", "acme", "grace_ms=10"], "grace_ms applies to the whole worker"),
        (["set", "--tenant", "bad tenant", "min_retries=1"], "must be 1-128 characters"),
        # Checked against the thresholds in force, so the topic is read first: the one case here that needs Kafka.
        pytest.param(["set", "--tenant", "*", "ewma_alpha=0"], "ewma_alpha must be in (0, 1]", marks=pytest.mark.kafka),
        (["reset", "--tenant", "a}b"], "cannot reset: tenant 'a}b'"),
        (["show", "--tenant", "a b"], "invalid --tenant"),
    ],
)
def test_refusals_are_one_line_with_exit_2(args: list[str], message: str) -> None:
    code, err = invoke(*args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: {acme: {retry_ratio: x}}", "tenants.acme: retry_ratio must be a decimal number"),
        ("default: {colour: 1}", "default: unknown detector setting 'colour'"),
        ("tenants: [", "not YAML"),
        ("[]", "expected a mapping"),
    ],
)
def test_apply_refuses_a_bad_file_as_a_whole(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    code, err = invoke("apply", str(path), "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_apply_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    code, err = invoke("apply", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err and "No such file" in err


def test_every_command_has_help() -> None:
    for command in ([], ["show"], ["set"], ["reset"], ["apply"]):
        result = runner.invoke(build_app(), ["detectors", *command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout
