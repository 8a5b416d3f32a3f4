"""The sink's storage fails for real for 30 s under publisher load: the worker waits, says so, and catches up exactly.

The fault is a full disk, not a mock: the worker's chDB directory lives on a small tmpfs, and a filler file takes
every free byte for 30 s (topped up as merges free space), then is deleted. Every insert fails meanwhile with
ClickHouse's NOT_ENOUGH_SPACE. The worker must not exit; ``/readyz`` answers 503 with ``waiting.sink`` and
``costplane_worker_waiting{part="sink"}`` is 1 for the whole outage, both clear after it; and the ClickHouse totals
by tenant equal the events' prices from the catalog — every event once, none lost in a failed flush, none twice
from a retried one.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.event import UsageEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env
from costplane.streams.worker.testload import (
    assert_running,
    expected_totals,
    metric,
    poll_until,
    publish,
    spend_by_tenant,
    wait_totals,
)
from costplane.synthetic import generate

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.chaos, pytest.mark.slow]

OUTAGE_S = 30.0
#: Events before, during and after the outage.
PHASES = (3_000, 6_000, 3_000)
CHUNK = 200


class DiskFiller:
    """Fills the filesystem of ``path`` with one file and keeps it full; deleting the file ends the outage."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def top_up(self) -> None:
        """Append until the disk refuses: also takes whatever space chDB freed since (merged-away parts)."""
        block = b"\0" * 65_536
        try:
            with open(self.path, "ab", buffering=0) as f:
                while f.write(block):
                    pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB tmpfs of its own (mounting needs root, as in the CI container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {mount} (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def sink_state(worker: WorkerProcess) -> tuple[int, dict[str, str], float | None]:
    """``/readyz`` status, what it says is waiting, and the sink's waiting gauge."""
    status, body = worker.get("/readyz")
    waiting = body.get("waiting", {}) if isinstance(body, dict) else {}
    return status, waiting, metric(worker, "costplane_worker_waiting", part="sink")


def test_sink_disk_full_for_thirty_seconds_waits_and_keeps_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    small_disk: Path,
    tmp_path: Path,
) -> None:
    now = int(time.time() * 1000)
    events = list(generate(sum(PHASES), seed=31, start_ms=now - 600_000, rate_per_s=40.0))
    before, during, after = (
        events[: PHASES[0]],
        events[PHASES[0] : PHASES[0] + PHASES[1]],
        events[PHASES[0] + PHASES[1] :],
    )
    truth = expected_totals(events)

    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=3))
    producer = Producer({**kafka_settings.confluent_config(), "linger.ms": 10})
    ch = clickhouse_settings.model_copy(update={"chdb_path": small_disk / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, usage_partitions=3, sink_max_age_s=0.5)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    filler = DiskFiller(small_disk / "filler")
    try:
        worker.wait_ready(120)
        for i in range(0, len(before), CHUNK):
            publish(producer, kafka_settings, before[i : i + CHUNK])
        written = poll_until(lambda: spend_by_tenant(worker), bool, 90, worker)
        assert written, "the sink wrote nothing before the outage"

        filler.top_up()
        outage = ride_outage(worker, filler, producer, kafka_settings, during)
        filler.remove()

        status, waiting, gauge = poll_until(lambda: sink_state(worker), lambda s: s[0] == 200, 60, worker)
        assert (status, waiting, gauge) == (200, {}, 0.0), f"not ready after the disk freed up:\n{worker.log_tail()}"
        for i in range(0, len(after), CHUNK):
            publish(producer, kafka_settings, after[i : i + CHUNK])
        totals = wait_totals(worker, len(events), 120)
        assert_running(worker)
        assert totals == truth
        assert sink_state(worker) == (200, {}, 0.0)
        # the outage was the real thing: chDB refused for lack of space, and the sink waited through all of it
        assert "NOT_ENOUGH_SPACE" in outage.reason or "space" in outage.reason.lower(), outage.reason
        assert outage.waited_s >= OUTAGE_S - outage.first_wait_after_s - 1.0
    finally:
        filler.remove()
        worker.stop()


class Outage:
    """What the test saw during the outage."""

    def __init__(self) -> None:
        self.reason = ""
        self.first_wait_after_s = 0.0
        self.waited_s = 0.0


def ride_outage(
    worker: WorkerProcess, filler: DiskFiller, producer: Producer, kafka: KafkaSettings, events: list[UsageEvent]
) -> Outage:
    """Keep the disk full for OUTAGE_S while publishing ``events``; every probe once the sink started waiting
    must say so (503, ``waiting.sink``, gauge 1), and it must start waiting soon after the disk filled."""
    seen = Outage()
    start = time.monotonic()
    chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)]
    waiting_since: float | None = None
    while time.monotonic() - start < OUTAGE_S:
        assert_running(worker)
        filler.top_up()
        if chunks:
            publish(producer, kafka, chunks.pop(0))
        status, waiting, gauge = sink_state(worker)
        if waiting_since is None and "sink" in waiting:
            waiting_since = time.monotonic()
            seen.first_wait_after_s = waiting_since - start
            seen.reason = waiting["sink"]
        if waiting_since is not None:
            assert status == 503 and "sink" in waiting and gauge == 1.0, (status, waiting, gauge)
        else:
            assert time.monotonic() - start < 20.0, f"the sink never waited on a full disk:\n{worker.log_tail()}"
        time.sleep(0.5)
    assert waiting_since is not None
    seen.waited_s = time.monotonic() - waiting_since
    for chunk in chunks:  # the rest of the load, should the machine have been too slow to send it all
        publish(producer, kafka, chunk)
    return seen
