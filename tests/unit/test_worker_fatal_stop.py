"""A sink loop that cannot go on stops the process in order, and the worker command exits with the documented status.

The loop thread records the reason and sends SIGTERM to its own process (the Faust worker stops as on a signal);
the entry point raises the recorded reason once everything stopped, and ``costplane worker`` turns it into exit
status 4 (3 for the invalid-ratio stop) with the reason on stderr.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.streams.pipeline.fatal import FatalLatch, InvalidRatioStop, SinkStopped, WorkerStopped
from costplane.streams.worker import run
from costplane.streams.worker.sinkloop import SinkLoop


class FailedLoop:
    """A sink loop whose run ended on an error retrying cannot fix (what SinkLoop.run leaves behind)."""

    error: BaseException | None = None

    def run(self) -> None:
        self.error = ValueError("the ledger schema refuses column x")


def test_a_failed_sink_loop_records_why_and_signals_its_own_process() -> None:
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        fatal = FatalLatch()
        run._start_loop(cast(SinkLoop, FailedLoop()), "test-sink", "the ClickHouse sink", fatal, None).join(10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    with pytest.raises(SinkStopped, match="the ClickHouse sink stopped: the ledger schema refuses column x"):
        fatal.raise_recorded()


@pytest.mark.parametrize(
    ("stop", "status"), [(SinkStopped("the backfill sink stopped: x"), 4), (InvalidRatioStop("y"), 3)]
)
def test_the_worker_command_exits_with_the_status_of_the_stop(
    stop: WorkerStopped, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stopped(*args: Any, **kwargs: Any) -> None:
        raise stop

    monkeypatch.setattr(run, "run_worker", stopped)
    result = CliRunner().invoke(build_app(), ["worker", "--role", "stream"])
    assert result.exit_code == status
    assert f"costplane worker: {stop}" in result.output
