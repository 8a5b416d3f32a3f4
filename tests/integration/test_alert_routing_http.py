"""Routed alerts over real HTTP: `costplane alerts test` reaches exactly the destinations its routes name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.http


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            paths.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths
    server.shutdown()
    server.server_close()


def test_alerts_reach_only_their_routed_destinations(receiver: tuple[str, list[str]], tmp_path: Path) -> None:
    base, paths = receiver
    routing = {
        "destinations": {
            "growth": {"slack": f"{base}/growth-token-123456"},
            "core": {"slack": f"{base}/core-token-123456"},
            "audit": {"webhook": f"{base}/audit-token-123456"},
        },
        "routes": [{"match": {"team": "growth"}, "to": ["growth"]}, {"match": {"team": "core"}, "to": ["core"]}],
        "default": ["audit"],
    }
    (tmp_path / "routing.json").write_text(json.dumps(routing))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTPLANE_")}
    env.update(
        {
            "COSTPLANE_ALERTS_ROUTING_FILE": str(tmp_path / "routing.json"),
            "COSTPLANE_ALERTS_RETRIES": "0",
            "COSTPLANE_DEV_STATE_DIR": str(tmp_path / "state"),
            "COSTPLANE_LOG_LEVEL": "DEBUG",
        }
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "costplane.cli", "alerts", "test", "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = run("--team", "growth", "--no-resolve")
    assert done.returncode == 0, done.stderr
    assert paths == ["/growth-token-123456"]
    assert [r["target"] for r in json.loads(done.stdout) if r["delivered"]] == ["growth"]
    paths.clear()
    assert run("--team", "marketing", "--no-resolve").returncode == 0
    assert paths == ["/audit-token-123456"]
    for secret in ("growth-token-123456", "core-token-123456", "audit-token-123456"):
        assert secret not in done.stdout + done.stderr  # routed destinations are secrets too
