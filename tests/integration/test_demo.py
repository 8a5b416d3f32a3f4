"""``costplane demo`` (what ``make demo`` runs) on the real stack: every part of the loop acts, and the total in
ClickHouse is exactly what the demo published, priced here from the providers' list prices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.http, pytest.mark.slow]

#: USD per million tokens (input, cached input, output) on the standard tier, as the providers list them.
LIST_PRICES = {
    ("openai", "gpt-4o-mini"): ("0.15", "0.075", "0.60"),
    ("openai", "gpt-4o"): ("2.50", "1.25", "10.00"),
    ("anthropic", "claude-haiku-4-5"): ("1.00", "0.10", "5.00"),
    ("anthropic", "claude-sonnet-4-5"): ("3.00", "0.30", "15.00"),
    ("openai", "text-embedding-3-small"): ("0.02", "0.02", "0"),
}
SERVICES = {
    "chat",
    "invoice-extract",
    "agent-loop",
    "report-writer",
    "checkout-assistant",
    "support-agent",
    "nightly-summaries",
    "doc-embed",
}


def nanos_per_token(usd_per_million: str) -> int:
    """USD per million tokens → integer nano-USD per token (exact for every price above)."""
    whole, _, frac = usd_per_million.partition(".")
    micro = int(whole) * 1_000_000 + int((frac + "000000")[:6])  # micro-USD per million tokens
    assert micro % 1000 == 0, f"{usd_per_million} per million is not a whole number of nano-USD per token"
    return micro // 1000


def list_price(event: dict[str, Any]) -> int:
    inp, cached, out = (nanos_per_token(p) for p in LIST_PRICES[(event["provider"], event["model"])])
    assert event["cache_write_tokens"] == 0 and event["reasoning_tokens"] == 0
    return event["input_tokens"] * inp + event["cached_input_tokens"] * cached + event["output_tokens"] * out


def _demo(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COSTPLANE_CLICKHOUSE_CHDB_PATH": str(tmp_path / "chdb")}
    env.pop("COSTPLANE_CLICKHOUSE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", "demo", "--out-dir", str(tmp_path / "runs"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_the_whole_loop(dev_stack: dict[str, Any], tmp_path: Path) -> None:
    done = _demo(tmp_path, "--seconds", "60", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {
        "events_published",
        "total_cost_nanos",
        "decisions",
        "guard_blocked_calls",
        "alerts",
        "report_html",
    }
    run_dir = Path(summary["report_html"]).parent
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert len(events) == summary["events_published"] > 0
    assert {e["feature"] for e in events} == SERVICES  # every simulated service published
    assert summary["total_cost_nanos"] == sum(list_price(e) for e in events)

    decisions = {(d["budget_id"], d["member"], d["action"]) for d in summary["decisions"]}
    assert ("acme-user-tokens-free", "tenant=acme,user=acme-bot-7,plan=free", "block") in decisions  # the runaway
    assert ("acme-staging-cap", "tenant=acme,env=staging", "block") in decisions
    assert summary["guard_blocked_calls"] >= 1
    assert {"kind": "retry_storm", "tenant": "globex", "state": "trigger"} in summary["alerts"]
    assert Path(summary["report_html"]).stat().st_size > 1_000_000  # the page with its charting bundle inlined
    _forget_run(dev_stack, run_dir.name.rsplit("-", 1)[1])


def _forget_run(dev_stack: dict[str, Any], run_id: str) -> None:
    """The run's Redis keys (its own prefix) go with the test; a person's demo keeps them to look at."""
    import redis

    client = redis.Redis.from_url(dev_stack["redis"]["url"])
    for key in client.scan_iter(f"demo-{run_id}:*", count=10_000):
        client.delete(key)
    client.close()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    short = _demo(tmp_path, "--seconds", "5", timeout=60)
    assert short.returncode == 2 and len(short.stderr.strip().splitlines()) == 1, short.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _demo(tmp_path, "--port", str(port), "--json", timeout=60)
    lines = [ln for ln in busy.stderr.splitlines() if ln.strip()]
    assert busy.returncode == 2 and len(lines) == 1 and f"port {port}" in lines[0], busy.stderr
    assert busy.stdout == "" and not (tmp_path / "runs").exists()  # nothing was started or written
