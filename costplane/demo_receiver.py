"""A local webhook receiver for the demo: takes the worker's alerts (generic JSON webhook format) on loopback.

It is what a team would point ``COSTPLANE_ALERTS_WEBHOOK_URLS`` at; here it only keeps what arrived, so the demo
can show each alert as it lands and tell the trigger-and-resolve story at the end.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AlertReceiver:
    """``POST /alerts`` on ``127.0.0.1:<port>``; :meth:`received` lists the alerts in arrival order."""

    def __init__(self, port: int = 0) -> None:
        """Binds at once: an occupied ``port`` raises ``OSError`` here, before anything else has started."""
        self._alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                alert = body.get("alert") if isinstance(body, dict) else None
                if isinstance(alert, dict):
                    receiver._add(alert)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return  # the demo's display shows what arrived; no access log on the terminal

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="costplane-demo-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def start(self) -> AlertReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _add(self, alert: dict[str, Any]) -> None:
        with self._lock:
            if all(a.get("alert_id") != alert.get("alert_id") for a in self._alerts):  # a retried delivery
                self._alerts.append(alert)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._alerts)
