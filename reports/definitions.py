"""Every report by name: the attribution reports (where the money went) and the savings reports (what to change).

The registry the CLI, the worker's API and the HTML page read, plus the two rules about a report's columns that
depend on how it is asked (``requests --by request`` lists requests; ``users`` always leads with the tenant).
"""

from __future__ import annotations

from collections.abc import Sequence

from costplane.reports.attribution import ATTRIBUTION, REQUEST_LIST_COLUMNS, per_request, users_options
from costplane.reports.base import Report, Row, present
from costplane.reports.savings import SAVINGS

REPORTS: dict[str, Report] = {r.name: r for r in (*ATTRIBUTION, *SAVINGS)}

__all__ = ["REPORTS", "Report", "Row", "per_request", "present", "public_columns", "users_options"]


def public_columns(report: Report, by: Sequence[str]) -> list[str]:
    """The JSON keys of a report's rows in order (the CSV header, also when there are no rows)."""
    keys = ["tenant"] if report.name == "users" else []
    keys += [b for b in by if b not in keys]
    if report.name == "requests" and len(by) == 1 and by[0] in ("request", "request_id"):
        keys += list(REQUEST_LIST_COLUMNS)
    else:
        keys += list(report.columns)
    out: list[str] = []
    for key in keys:
        out.append(key)
        if key.endswith("_nanos"):
            out.append(key.removesuffix("_nanos") + "_usd")
    return out
