"""The HTML report's figures built from report rows (pure: no ClickHouse, no browser)."""

from __future__ import annotations

from costplane.report_html import leak_totals, leak_waterfall


def test_leak_waterfall_reads_the_overall_row_and_ends_on_essential_spend() -> None:
    rows = [
        {
            "tenant": "a",
            "total_cost_nanos": 70,
            "retry_waste_nanos": 5,
            "history_nanos": 3,
            "essential_nanos": 62,
            "overall": False,
        },
        {
            "tenant": "b",
            "total_cost_nanos": 30,
            "retry_waste_nanos": 0,
            "history_nanos": 10,
            "essential_nanos": 20,
            "overall": False,
        },
        {
            "tenant": None,
            "total_cost_nanos": 100,
            "retry_waste_nanos": 5,
            "history_nanos": 13,
            "essential_nanos": 82,
            "overall": True,
        },
    ]
    assert leak_totals(rows) == (100, {"retry_waste": 5, "history": 13})
    trace = leak_waterfall(rows)["data"][0]
    assert trace["x"] == ["spend", "retry_waste", "history", "essential"]
    assert trace["measure"] == ["absolute", "relative", "relative", "total"]
    assert trace["y"][:3] == [100e-9, -5e-9, -13e-9]
