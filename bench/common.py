"""Shared benchmark helpers: percentiles and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from costplane.config import KafkaSettings

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the ``## name`` section of docs/benchmarks.md with ``body``."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {name}\n\n_Measured {stamp} on {machine()}._\n\n{body.strip()}\n"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    DOC.write_text(text.rstrip() + "\n")


def drop_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key a benchmark wrote under its own prefix (a million-user run leaves millions otherwise)."""
    import redis

    client = redis.Redis.from_url(url)
    dropped = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            dropped += int(client.unlink(*batch))
            batch.clear()
    if batch:
        dropped += int(client.unlink(*batch))
    return dropped


def drop_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> int:
    """Delete every topic under the benchmark's own topic prefix, Faust's internal ones included (they are named
    after the consumer group, ``<prefix>.worker``). Why: each run creates a dozen topics with six partitions;
    left behind, they filled the dev broker with hundreds of partitions and gigabytes that later runs paid for."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.confluent_config())
    mine = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(f"{kafka.topic_prefix}.")]
    if not mine:
        return 0
    for future in admin.delete_topics(mine, operation_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
    return len(mine)


def clean_up_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` so a benchmark stopped with ``kill`` still runs its ``finally``.

    Why: Python dies on SIGTERM without unwinding, and a killed run left its worker process and a million Redis
    keys under its prefix behind (only SIGKILL should be able to do that).
    """

    def _exit(signum: int, _frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
