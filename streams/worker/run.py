"""Start a worker process: topics, the embedded-ClickHouse ownership, the sink thread and the Faust worker."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings
from costplane.logging import get_logger
from costplane.streams.pipeline.fatal import FatalLatch, SinkStopped
from costplane.streams.worker.allocator import pin_mmap_threshold, trim_every
from costplane.streams.worker.gctuning import tune_gc
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.priority import lower_priority

if TYPE_CHECKING:
    from costplane.streams.worker.sinkloop import SinkLoop

log = get_logger(__name__)


def run_worker(
    kafka: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse: ClickHouseSettings,
    worker: WorkerSettings,
    loglevel: str = "WARNING",
) -> None:
    """Run until a signal or a deliberate stop; never returns normally.

    A signal ends in the Faust worker's ``SystemExit``; a deliberate stop (the invalid-ratio limit, a sink loop that
    cannot go on) raises its :class:`~costplane.streams.pipeline.fatal.WorkerStopped` once everything has stopped,
    for the entry point to turn into the documented exit status."""
    import faust

    from costplane.config import ConfigError
    from costplane.streams.app import create_app, group_id
    from costplane.streams.topics import create_topics
    from costplane.streams.worker.access import exposure_problem, tenant_tokens
    from costplane.streams.worker.sinkloop import SinkLoop, backfill_loop

    problem = exposure_problem(worker)
    try:
        tenant_tokens(worker)
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:  # before anything starts: an open API would serve every tenant's spend
        raise ConfigError(f"costplane worker: {problem}")

    if worker.role == "sink":  # from the main thread, before any other starts: the whole process yields
        lower_priority(worker.sink_nice)
    create_topics(kafka, worker)
    metrics = WorkerMetrics()
    fatal = FatalLatch()
    sink: SinkLoop | None = None
    if worker.role in ("sink", "all"):
        sink = SinkLoop(kafka, clickhouse, worker, metrics, f"{group_id(kafka, worker)}.sink")
        # One process per chDB directory: takes the lock (or raises DirectoryOwned naming the owner) first.
        sink.open(api_url=f"http://{worker.web_host}:{worker.web_port}")
    app = create_app(
        kafka,
        redis_settings,
        worker,
        clickhouse,
        metrics,
        report=sink.report if sink is not None else None,
        sink_ready=(lambda: sink.ready and sink.error is None) if sink is not None else None,
        sink_waiting=(lambda: sink.waiting) if sink is not None else None,
        fatal=fatal,
    )
    threads: list[threading.Thread] = []
    # Until the Faust worker handles SIGTERM itself, the signal (an operator's, or a sink loop's deliberate stop)
    # ends the process through the same cleanup below instead of killing it on the spot.
    signal.signal(signal.SIGTERM, _stop_before_faust)
    try:
        if sink is not None:
            backfill = backfill_loop(sink)  # imported history: only the sink reads it, never a budget window
            nice = worker.sink_nice if worker.role == "all" else None
            threads = [
                _start_loop(sink, "costplane-sink", "the ClickHouse sink", fatal, nice),
                _start_loop(backfill, "costplane-backfill", "the backfill sink", fatal, None),
            ]
        _tune(worker)
        log.info("worker_starting", role=worker.role, group=group_id(kafka, worker), web_port=worker.web_port)
        faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        if sink is not None:
            sink.stop_event.set()  # the loop flushes what it buffered (insert → commit → mark seen), then stops
            if threads:
                backfill.stop_event.set()
            for thread in threads:
                thread.join(timeout=30)
            sink.close()
        fatal.raise_recorded()  # a deliberate stop: the entry point exits with its status instead of Faust's


def _stop_before_faust(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _tune(worker: WorkerSettings) -> None:
    """Garbage collection and allocator settings of a long-running worker process."""
    tune_gc(worker.gc_threshold)
    pin_mmap_threshold(worker.malloc_mmap_threshold_kib)
    if worker.malloc_trim_s > 0:
        threading.Thread(target=trim_every, args=(worker.malloc_trim_s,), name="costplane-trim", daemon=True).start()


def _start_loop(loop: SinkLoop, name: str, what: str, fatal: FatalLatch, nice: int | None) -> threading.Thread:
    """Run a sink loop in its own thread; a loop that fails stops the whole process (exit status 4) in order."""

    def main() -> None:
        if nice is not None:  # the sink thread yields to the stream role's thread
            lower_priority(nice)
        try:
            loop.run()
        finally:
            if loop.error is not None:
                fatal.stop_process(SinkStopped(f"{what} stopped: {loop.error}"))

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    return thread
