"""Alert routing rules: by tenant, team, feature, kind and severity to named destinations; `alerts test --route`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.routing import RoutingError, parse_routing

KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
DOC = {
    "destinations": {
        "growth-slack": {"slack": "https://hooks.slack.com/services/T0/B0/growth"},
        "core-slack": {"slack": "https://hooks.slack.com/services/T0/B0/core"},
        "pager": {"pagerduty": KEY},
        "audit": {"webhook": "https://audit.example.com/hook"},
    },
    "routes": [
        {"match": {"tenant": "acme", "team": "growth"}, "to": ["growth-slack"]},
        {"match": {"team": ["core", "infra"]}, "to": "core-slack"},
        {"match": {"kind": ["budget_block", "budget_forecast"]}, "severity": "critical", "to": ["pager", "core-slack"]},
    ],
    "default": ["audit"],
}


def event(tenant: str = "acme", kind: str = "spike", severity: str = "warning", **subject: str) -> AlertEvent:
    return AlertEvent(
        alert_id="a",
        dedup_key="k",
        kind=kind,
        action="trigger",
        severity=severity,  # type: ignore[arg-type]
        tenant=tenant,
        summary="s",
        window_start_ms=0,
        window_end_ms=1,
        occurred_at_ms=1,
        subject=dict(subject),
    )


def test_rules_pick_destinations() -> None:
    routing = parse_routing(DOC)
    assert routing.destinations_for(event(team="growth")) == ["growth-slack"]
    assert routing.destinations_for(event(tenant="globex", team="growth")) == ["audit"]  # tenant must match too
    assert routing.destinations_for(event(team="infra")) == ["core-slack"]
    assert routing.destinations_for(event(kind="budget_block", severity="warning")) == ["audit"]  # below critical
    assert routing.destinations_for(event(kind="budget_block", severity="critical", team="growth")) == [
        "growth-slack",
        "pager",
        "core-slack",
    ]
    assert routing.destinations_for(event(kind="budget_block", severity="critical", team="core")) == [
        "core-slack",
        "pager",
    ]  # each destination once


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routes": [{"match": {"colour": "red"}, "to": ["audit"]}]}, "cannot match on colour"),
        ({"routes": [{"to": ["nowhere"]}]}, "unknown destination"),
        ({"routes": [{"to": ["audit"], "severity": "loud"}]}, "severity is one of"),
        ({"default": ["nowhere"]}, "unknown destination"),
        ({"destinations": {"p": {"pagerduty": "short"}}}, "32 characters"),
        ({"destinations": {"s": {"slack": "not a url"}}}, "http"),
        ({"destinations": {"s": {"email": "x@y"}}}, "exactly one of"),
        ({"extra": 1}, "unknown routing key"),
    ],
)
def test_bad_routing_is_refused_with_one_line(change: dict[str, object], message: str) -> None:
    doc = {**DOC, **change}
    if "destinations" in change:
        doc["routes"], doc["default"] = [], []
    with pytest.raises(RoutingError, match=message):
        parse_routing(doc)


def test_alerts_test_route_shows_where_an_alert_would_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(DOC))
    for name in (
        "COSTPLANE_ALERTS_SLACK_WEBHOOK_URL",
        "COSTPLANE_ALERTS_PAGERDUTY_ROUTING_KEY",
        "COSTPLANE_ALERTS_WEBHOOK_URLS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COSTPLANE_ALERTS_ROUTING_FILE", str(path))
    runner = CliRunner()
    done = runner.invoke(
        build_app(),
        [
            "alerts",
            "test",
            "--route",
            "--json",
            "--tenant",
            "acme",
            "--team",
            "growth",
            "--kind",
            "budget_block",
            "--severity",
            "critical",
        ],
    )
    assert done.exit_code == 0, done.output
    assert sorted(json.loads(done.stdout)["targets"]) == ["core-slack", "growth-slack", "pager"]
    done = runner.invoke(build_app(), ["alerts", "test", "--route", "--tenant", "globex"])
    assert done.exit_code == 0 and "→ audit" in done.stdout

    path.write_text(json.dumps({**DOC, "default": ["nowhere"]}))
    env = {**os.environ, "COSTPLANE_ALERTS_ROUTING_FILE": str(path), "COSTPLANE_DEV_STATE_DIR": str(tmp_path)}
    failed = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "alerts", "test", "--route"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2 and "unknown destination(s) nowhere" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
