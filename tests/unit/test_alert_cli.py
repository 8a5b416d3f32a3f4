"""``costplane alerts``: registered, documented, and one readable line per alert."""

from __future__ import annotations

from rich.console import Console
from typer.testing import CliRunner

from costplane.cli.alerts import alert_line
from costplane.cli.main import build_app
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.core.findings import Contributor

EVENT = AlertEvent(
    alert_id="a1",
    dedup_key="user_share:acme:user=u-[9]",
    kind="user_share",
    action="trigger",
    severity="warning",
    tenant="acme",
    summary="u-[9] used 3.2% of the daily budget",
    window_start_ms=0,
    window_end_ms=60_000,
    occurred_at_ms=61_000,
    subject={"user_id": "u-[9]"},
    contributors=(Contributor("user_id", "u-[9]", 1_500_000_000),),
    runbook="docs/runbook.md#user-share",
)


def test_tail_is_registered_with_help() -> None:
    result = CliRunner().invoke(build_app(), ["alerts", "tail", "--help"])
    assert result.exit_code == 0
    for option in ("--tenant", "--json", "--from-beginning", "--max", "--idle-timeout"):
        assert option in result.output


def test_alert_line_shows_the_essentials_and_escapes_markup() -> None:
    console = Console(record=True, width=400, color_system=None)
    console.print(alert_line(EVENT))
    text = console.export_text()
    for part in (
        "1970-01-01T00:01:01.000Z",
        "TRIGGER",
        "warning",
        "user_share",
        "acme",
        "user_id=u-[9]",
        "u-[9] used 3.2% of the daily budget",
        "top user_id=u-[9] $1.50",
        "docs/runbook.md#user-share",
    ):
        assert part in text, part
