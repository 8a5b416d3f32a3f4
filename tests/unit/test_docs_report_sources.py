"""docs/clickhouse.md says which reports read the rollups and which the raw events; the report SQL agrees."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from costplane.reports.definitions import REPORTS
from costplane.reports.options import ReportOptions
from costplane.reports.sql import build
from costplane.streams.sink.query import resolved_options

DOC = Path(__file__).resolve().parents[2] / "docs" / "clickhouse.md"
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _documented(first_cell: str) -> set[str]:
    """The report names in the last cell of the table row whose first cell starts with ``first_cell``."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith(f"| {first_cell}")]
    assert len(rows) == 1, f"docs/clickhouse.md: one table row starting `| {first_cell}` expected, found {len(rows)}"
    return set(re.findall(r"`([a-z-]+)`", rows[0].rsplit("|", 2)[1]))


def _source(name: str, **kw: object) -> str:
    report = REPORTS[name]
    options = resolved_options(report, ReportOptions.parse(name, now=NOW, **kw))  # type: ignore[arg-type]
    query = build(report.query, options, "cp", raw_only=report.raw_only, families=report.families, needs=report.needs)
    return query.source


def test_the_doc_lists_every_report_once_under_what_it_reads() -> None:
    rollups, raw = _documented("the rollups"), _documented("raw events")
    assert rollups | raw == set(REPORTS) and not rollups & raw
    assert raw == {name for name, report in REPORTS.items() if report.raw_only}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_each_report_reads_what_the_doc_says(name: str) -> None:
    if name in _documented("raw events"):
        assert _source(name).startswith("raw events")
        assert _source(name, by=["team"]).startswith("raw events")
        return
    assert _source(name).startswith("rollup_users_" if name == "users" else "rollup_spend_")
    by_user = _source(name, by=["user"])
    assert by_user.startswith("raw events" if name == "unpriced" else "rollup_users_")
    # What no family keeps, and another price version, come from the raw events in the rollups' shape.
    assert _source(name, by=["session"]).startswith("raw events")
    assert _source(name, by=["user", "model"]).startswith("raw events")
    assert _source(name, price_version="2026-01-01").startswith("raw events")


def test_advise_reads_the_reports_the_doc_names_with_their_groupings() -> None:
    from costplane.reports.advice import SOURCES

    text = (DOC.parent / "reports.md").read_text()
    paragraph = text[text.index("`costplane advise [--since T]") :].split("\n\n", 1)[0]
    said = {
        "caching": ("tenant", "feature", "model"),
        "batch": ("tenant", "feature", "model"),
        "models": ("tenant", "feature", "model"),
        "max-tokens": ("tenant", "feature", "model"),
        "retries": ("tenant", "feature", "model"),
        "embeddings": ("tenant", "feature"),
        "context": ("tenant", "feature"),
        "environments": ("tenant", "env"),
    }
    assert {report: tuple(by) for report, by in SOURCES.values()} == said
    assert all(f"`{report}`" in paragraph for report in said)
