"""docs/runbook.md has a section for every alert kind, each saying what it means, how to confirm it, what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from costplane.streams.alerting.format import runbook_url
from costplane.streams.alerting.model import AlertEvent

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
KINDS = (
    "retry_storm",
    "runaway_loop",
    "cost_spike",
    "token_spike",
    "cache_hit_drop",
    "user_share",
    "unpriced_model",
    "price_mismatch",
    "budget_forecast",
    "budget_threshold",
    "budget_blocked",
    "dead_letter_flood",
    "fail_open",
)


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", RUNBOOK.read_text(), flags=re.M)[1:]
    return {p.split("\n", 1)[0].strip(): p.split("\n", 1)[1] for p in parts}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_complete_section(kind: str) -> None:
    anchor = kind.replace("_", "-")
    body = sections().get(anchor)
    assert body is not None, f"no '## {anchor}' section"
    for part in ("**Meaning.**", "**Confirm.**", "**What to do.**"):
        assert part in body, (anchor, part)
    if kind != "dead_letter_flood":  # its evidence lives on the DLQ topic first; ClickHouse second
        assert "```sql" in body and "costplane.usage_events" in body


def test_default_runbook_link_points_at_an_existing_section() -> None:
    event = AlertEvent(
        alert_id="a",
        dedup_key="k",
        kind="cache_hit_drop",
        action="trigger",
        severity="info",
        tenant="t",
        summary="s",
        window_start_ms=0,
        window_end_ms=1,
        occurred_at_ms=1,
    )
    assert runbook_url(event, None) == "docs/runbook.md#cache-hit-drop"
    assert "cache-hit-drop" in sections()


def test_internal_links_resolve() -> None:
    anchors = set(sections())
    for target in re.findall(r"\]\(#([a-z-]+)\)", RUNBOOK.read_text()):
        assert target in anchors, target
