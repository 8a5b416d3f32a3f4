"""``costplane budget apply|list|delete`` against a real broker: the compacted topic is the source of truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from costplane.config import KafkaSettings, RedisSettings
from costplane.streams.worker.testing import worker_env

pytestmark = [pytest.mark.kafka]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_apply_list_delete(kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path) -> None:
    env = worker_env(kafka_settings, redis_settings, None)
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "- {id: a, scope: 'tenant=acme,user=*', period: rolling-1h, limit_tokens: 100}\n"
        "- {id: b, scope: 'tenant=acme', period: month, tz: Europe/Paris, limit_usd: '10', soft: [0.8]}\n"
    )
    done = cli(env, "budget", "apply", str(path))
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli(env, "budget", "list", "--format", "json").stdout)
    assert [(b["id"], b["limit"], b["version"]) for b in listed] == [("a", 100, 1), ("b", 10_000_000_000, 1)]

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: c, scope: 'tenant=acme', limit_tokens: 1}\n- {id: d, scope: 'user=*', limit_tokens: 1}\n")
    refused = cli(env, "budget", "apply", str(bad))
    assert refused.returncode == 2 and "entry 1 (d)" in refused.stderr  # nothing written: c is not there either

    assert (
        cli(
            env,
            "budget",
            "set",
            "a",
            "--scope",
            "tenant=acme,user=*",
            "--period",
            "rolling-1h",
            "--limit-tokens",
            "200",
        ).returncode
        == 0
    )
    assert cli(env, "budget", "delete", "b").returncode == 0
    listed = json.loads(cli(env, "budget", "list", "--format", "json").stdout)
    assert [(b["id"], b["limit"], b["version"]) for b in listed] == [("a", 200, 2)]


def test_delete_of_an_unknown_id_says_so(kafka_settings: KafkaSettings, redis_settings: RedisSettings) -> None:
    """Before: deleting an id that was never set printed "deleted" and exited 0."""
    env = worker_env(kafka_settings, redis_settings, None)
    done = cli(env, "budget", "delete", "never-set")
    assert done.returncode == 2 and "no budget 'never-set'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
