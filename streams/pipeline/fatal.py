"""Conditions under which the worker must stop, carried to the process entry point as exceptions.

A step or a thread that cannot go on raises (or records) a :class:`WorkerStopped`; the loop that runs it asks the
process to stop in order (SIGTERM to itself: the Faust worker shuts down as on a signal, threads flush and join),
and the entry point turns the recorded exception into the documented exit status. Nothing below the entry point
leaves the process itself.
"""

from __future__ import annotations

import os
import signal
import threading

#: Exit status: the invalid-event ratio passed its limit (docs/operations.md).
EXIT_INVALID_RATIO = 3
#: Exit status: the ClickHouse sink (or the backfill sink) stopped on a non-retryable error.
EXIT_SINK_STOPPED = 4


class WorkerStopped(Exception):
    """The worker stops on purpose; ``exit_code`` is the process's exit status and the message says why."""

    exit_code = 1


class InvalidRatioStop(WorkerStopped):
    """Too many invalid records in the window: a bad deploy upstream, not something to count through."""

    exit_code = EXIT_INVALID_RATIO


class SinkStopped(WorkerStopped):
    """A sink loop failed in a way retrying cannot fix (a bug, a schema ClickHouse refuses)."""

    exit_code = EXIT_SINK_STOPPED


class FatalLatch:
    """The first fatal condition of the process, recorded from any thread, raised again by the entry point."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: WorkerStopped | None = None

    @property
    def error(self) -> WorkerStopped | None:
        return self._error

    def record(self, error: WorkerStopped) -> bool:
        """Keep ``error`` unless one is kept already; True when this call recorded it."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
            return True

    def stop_process(self, error: WorkerStopped) -> None:
        """Record ``error`` and ask the process to stop as it does on SIGTERM (the first error wins)."""
        if self.record(error):
            os.kill(os.getpid(), signal.SIGTERM)

    def raise_recorded(self) -> None:
        """Raise the recorded error, if any: called by the entry point once everything has stopped."""
        if self._error is not None:
            raise self._error
