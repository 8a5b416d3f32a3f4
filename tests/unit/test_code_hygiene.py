"""The source stays formatted and lint-clean: CI runs `make test`, so the style rules live in the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_every_file_is_ruff_formatted() -> None:
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_passes_including_the_complexity_limit() -> None:
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
