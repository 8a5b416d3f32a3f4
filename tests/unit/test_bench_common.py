"""The benchmarks' shared helpers that are not measurements."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import pathlib, sys, time
from bench.common import clean_up_on_sigterm
clean_up_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    pathlib.Path(sys.argv[1]).write_text("cleaned up")
"""


def test_a_benchmark_stopped_with_sigterm_runs_its_finally(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(marker)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 128 + signal.SIGTERM
    assert marker.read_text() == "cleaned up"
