"""Alerts over real HTTP: a local receiver (127.0.0.1, random port, in-test thread) gets Slack and PagerDuty bodies.

A synthetic incident (a retry storm, a cost spike) that is active for a few evaluations and then clear yields exactly
one trigger and one resolve at the receiver in both formats; a receiver answering 500 then 200 is retried; one
that always fails yields a dead-letter record.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from costplane.streams.alerting.delivery import AlertDispatcher, DeadLetter, RetryPolicy, build_targets
from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.pagerduty import validate_pagerduty_event
from costplane.streams.core.findings import Contributor, Finding

pytestmark = pytest.mark.http

KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
MIN = 60_000
T0 = 1_790_000_000_000
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=5.0)


class Receiver:
    """Records every POST by path; answers from a per-path script of status codes (last one repeats)."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.script: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.received.setdefault(self.path, []).append(body)
                    codes = receiver.script.get(self.path, [200])
                    status = codes.pop(0) if len(codes) > 1 else codes[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}' if status < 300 else b'{"error":"boom"}')

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received.get(path, []))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def synthetic(kind: str, active: bool, t: int) -> Finding:
    numbers = (
        {"retry_ratio": "0.22" if active else "0.01", "threshold": "0.05"}
        if kind == "retry_storm"
        else {"rate_usd_per_min": "4.10" if active else "1.02", "baseline_usd_per_min": "1.00"}
    )
    return Finding(
        kind=kind,
        dedup_key=f"{kind}:acme:feature=chat:model=gpt-4o",
        tenant="acme",
        active=active,
        severity="critical",
        summary=f"{kind} on acme/chat/gpt-4o",
        window_start_ms=t - MIN,
        window_end_ms=t,
        subject={"feature": "chat", "model": "gpt-4o"},
        numbers=numbers,
        contributors=(Contributor("user_id", "u-17", 3_210_000_000, 120_000, 300),),
        suggested_action="Look at the top contributor first.",
        runbook=f"docs/runbook.md#{kind.replace('_', '-')}",
    )


async def _run_incidents(receiver: Receiver, letters: list[DeadLetter]) -> None:
    targets = build_targets(
        slack_webhook_url=SecretStr(receiver.base + "/slack/T0/B0/secret"),
        pagerduty_routing_key=SecretStr(KEY),
        pagerduty_url=receiver.base + "/pd",
        pagerduty_min_severity="warning",
    )
    dispatcher = AlertDispatcher(targets, letters.append, policy=FAST)
    await dispatcher.start()
    lifecycle = AlertLifecycle(LifecycleConfig(resolve_after_ms=2 * MIN, cooldown_ms=10 * MIN))
    # minute by minute: quiet, 4 minutes of storm and spike (with one noisy dip), then quiet for 5 minutes
    levels = [False, True, True, False, True, False, False, False, False, False]
    for i, active in enumerate(levels):
        t = T0 + i * MIN
        for event in lifecycle.observe([synthetic("retry_storm", active, t), synthetic("cost_spike", active, t)], t):
            dispatcher.submit(event)
    await dispatcher.stop(drain_timeout_s=10)


def test_one_trigger_and_one_resolve_per_incident_in_slack_and_pagerduty(receiver: Receiver) -> None:
    letters: list[DeadLetter] = []
    asyncio.run(_run_incidents(receiver, letters))
    assert letters == []
    pd = receiver.bodies("/pd")
    assert [validate_pagerduty_event(b) for b in pd] == [[]] * len(pd)
    for kind in ("retry_storm", "cost_spike"):
        key = f"{kind}:acme:feature=chat:model=gpt-4o"
        assert [b["event_action"] for b in pd if b["dedup_key"] == key] == ["trigger", "resolve"]
        slack = [b["text"] for b in receiver.bodies("/slack/T0/B0/secret") if f" {kind} " in b["text"]]
        assert [t.split("]")[0].split("[")[1] for t in slack] == ["TRIGGERED", "RESOLVED"]
    trigger = next(b for b in pd if b["event_action"] == "trigger")
    assert trigger["payload"]["custom_details"]["top_contributors"][0]["value"] == "u-17"
    assert trigger["payload"]["custom_details"]["runbook"].startswith("docs/runbook.md#")
    assert "links" not in trigger  # only absolute runbook links (COSTPLANE_ALERTS_RUNBOOK_BASE_URL) are sent


def test_500_then_200_is_retried_until_delivered(receiver: Receiver) -> None:
    receiver.script["/hook"] = [500, 500, 200]
    letters: list[DeadLetter] = []

    async def go() -> AlertDispatcher:
        dispatcher = AlertDispatcher(
            build_targets(webhook_urls=[SecretStr(receiver.base + "/hook")]), letters.append, policy=FAST
        )
        await dispatcher.start()
        lifecycle = AlertLifecycle()
        for event in lifecycle.observe([synthetic("retry_storm", True, T0)], T0):
            dispatcher.submit(event)
        await dispatcher.stop()
        return dispatcher

    dispatcher = asyncio.run(go())
    bodies = receiver.bodies("/hook")
    assert len(bodies) == 3 and letters == [] and dispatcher.delivered == 1
    assert {b["alert"]["alert_id"] for b in bodies} == {bodies[0]["alert"]["alert_id"]}  # same id: receivers dedup


def test_a_receiver_that_always_fails_yields_a_dead_letter(receiver: Receiver) -> None:
    receiver.script["/pd"] = [503]
    letters: list[DeadLetter] = []

    async def go() -> None:
        targets = build_targets(pagerduty_routing_key=SecretStr(KEY), pagerduty_url=receiver.base + "/pd")
        dispatcher = AlertDispatcher(targets, letters.append, policy=FAST)
        await dispatcher.start()
        for event in AlertLifecycle().observe([synthetic("cost_spike", True, T0)], T0):
            dispatcher.submit(event)
        await dispatcher.stop()

    asyncio.run(go())
    assert len(receiver.bodies("/pd")) == FAST.max_attempts
    [letter] = letters
    record = letter.to_json_dict()
    assert (record["target"], record["reason"], record["attempts"], record["last_status"]) == (
        "pagerduty",
        "http_status",
        4,
        503,
    )
    assert record["alert"]["kind"] == "cost_spike" and KEY not in json.dumps(record)


def test_alerts_test_command_reaches_every_target_and_reports_failures(receiver: Receiver) -> None:
    from typer.testing import CliRunner

    from costplane.cli.main import build_app

    receiver.script["/broken"] = [404]
    env = {
        "COSTPLANE_ALERTS_PAGERDUTY_ROUTING_KEY": KEY,
        "COSTPLANE_ALERTS_PAGERDUTY_URL": receiver.base + "/pd",
        "COSTPLANE_ALERTS_WEBHOOK_URLS": f"{receiver.base}/hook,{receiver.base}/broken",
        "COSTPLANE_ALERTS_SLACK_WEBHOOK_URL": "",
        "COSTPLANE_ALERTS_RETRIES": "0",
    }
    result = CliRunner().invoke(build_app(), ["alerts", "test", "--json"], env=env)
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [(r["target"], r["action"], r["delivered"]) for r in rows] == [
        ("pagerduty", "trigger", True),
        ("pagerduty", "resolve", True),
        ("webhook-0", "trigger", True),
        ("webhook-0", "resolve", True),
        ("webhook-1", "trigger", False),
        ("webhook-1", "resolve", False),
    ]
    assert [b["event_action"] for b in receiver.bodies("/pd")] == ["trigger", "resolve"]
    assert [validate_pagerduty_event(b) for b in receiver.bodies("/pd")] == [[], []]
    assert "/broken" not in result.stdout  # errors name the host, never the URL's path
    ok = CliRunner().invoke(
        build_app(),
        ["alerts", "test", "--severity", "warning"],
        env={**env, "COSTPLANE_ALERTS_WEBHOOK_URLS": receiver.base + "/hook"},
    )
    assert ok.exit_code == 0, ok.output  # PagerDuty (critical only) is skipped, not failed
    assert "skipped" in ok.stdout
