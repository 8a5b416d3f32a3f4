"""One self-contained HTML file of the reports: each chart beside the numbers it draws, readable offline.

Charts are Plotly figures; the page inlines Plotly's own JavaScript bundle (shipped inside the ``plotly`` wheel),
its styles and its data, so it opens from a laptop on a plane, from a mail attachment, or in a CI artifact, and
asks the network for nothing.

The numbers come from the same report functions as ``costplane report NAME --format json`` (a
:data:`ReportRunner`: ``costplane.cli.report.collect``, or the sink worker's ``/api/report`` in the demo). The page
shows spend over time and the top spenders, then every report of ``costplane.reports`` with its default grouping
and its one-line reading: a new report appears on the page without a change here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from costplane.reports.options import ReportOptions

#: Runs one report: options in, ``ReportResult`` (``rows``, ``reading``, ``by``) out.
ReportRunner = Callable[[ReportOptions], Any]


@dataclass
class Section:
    """A titled chart (a Plotly figure as a dict, or none) beside the table of the numbers it shows."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    figure: dict[str, Any] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- figures (plain Plotly figure dicts: the page's script draws them) ------------------------------------------
def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 90},
        "height": 360,
        "legend": {"orientation": "h"},
        **more,
    }


def bar_figure(title: str, labels: Sequence[str], values: Sequence[float], axis: str) -> dict[str, Any]:
    return {
        "data": [{"type": "bar", "x": list(labels), "y": list(values), "name": axis}],
        "layout": _layout(title, yaxis={"title": {"text": axis}}),
    }


def stacked_figure(
    title: str, rows: Sequence[Mapping[str, Any]], x: str, stack: str, value: str, axis: str
) -> dict[str, Any]:
    """Bars of ``value`` per ``x``, stacked by ``stack``."""
    xs = sorted({str(r[x]) for r in rows})
    traces = []
    for name in sorted({str(r[stack]) for r in rows}):
        by_x: dict[str, float] = {}
        for r in rows:
            if str(r[stack]) == name:
                by_x[str(r[x])] = by_x.get(str(r[x]), 0) + _axis(value, r[value])
        traces.append({"type": "bar", "name": name, "x": xs, "y": [by_x.get(t, 0) for t in xs]})
    return {"data": traces, "layout": _layout(title, barmode="stack", yaxis={"title": {"text": axis}})}


def usd_float(nanos: int) -> float:
    """Dollars as a float for a chart's axis only; tables always show exact integers and decimal strings."""
    return nanos / 1_000_000_000


def _axis(column: str, value: Any) -> float:
    if value is None:
        return 0.0
    return usd_float(int(value)) if column.endswith("_nanos") else float(value)


def _label(row: Mapping[str, Any], by: Sequence[str]) -> str:
    return " / ".join("(none)" if row.get(d) is None else str(row[d]) for d in by) or "everything"


def _chart_column(columns: Sequence[str]) -> str | None:
    """What a report's chart plots: its spend, else its first amount of money, else its first count."""
    if "cost_nanos" in columns:
        return "cost_nanos"
    money = [c for c in columns if c.endswith("_nanos")]
    return money[0] if money else next((c for c in columns if c in ("attempts", "tokens", "requests")), None)


# -- sections ---------------------------------------------------------------------------------------------------
def time_dimension(base: ReportOptions) -> str:
    """hour for a range up to a week, day beyond."""
    end = base.until or base.now
    return "hour" if (end - base.since).total_seconds() <= 7 * 86_400 else "day"


def _result(run: ReportRunner, base: ReportOptions, report: str, by: Sequence[str] = (), top: int | None = None) -> Any:
    options = replace(base, report=report, top=top)
    return run(options.with_by(tuple(by)) if by else replace(options, by=()))


def spend_over_time(run: ReportRunner, base: ReportOptions, stack: str) -> Section:
    when = time_dimension(base)
    rows = _result(run, base, "spend", (when, stack)).rows
    return Section(
        f"spend-by-{stack}",
        f"Spend over time by {stack}",
        (when, stack, "attempts", "cost_nanos", "cost_usd"),
        rows,
        stacked_figure(f"Spend per {when} by {stack} (USD)", rows, when, stack, "cost_nanos", "USD"),
    )


def top(run: ReportRunner, base: ReportOptions, *by: str, limit: int = 15) -> Section:
    result = _result(run, base, "spend", by, top=limit)
    rows = result.rows
    name = " × ".join(by)
    return Section(
        f"top-{'-'.join(by)}",
        f"Top {name} by spend",
        (*by, "requests", "attempts", "cost_nanos", "cost_usd"),
        rows,
        bar_figure(
            f"Spend by {name} (USD)", [_label(r, by) for r in rows], [usd_float(r["cost_nanos"]) for r in rows], "USD"
        ),
        note=result.reading,
    )


def report_section(run: ReportRunner, base: ReportOptions, name: str) -> Section:
    """One report with its default grouping: its rows, its reading, and a chart of its main amount."""
    result = _result(run, base, name)
    by = list(result.by)
    rows = result.rows
    columns = tuple(rows[0]) if rows else tuple(by)
    figure = None
    if name == "context" and rows:  # the context-growth curve: mean prompt per turn, one line per group
        lines: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            lines.setdefault(_label(r, by), []).append(r)
        figure = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": label,
                    "x": [str(r["turn"]) for r in members],
                    "y": [r["avg_input_tokens"] for r in members],
                }
                for label, members in lines.items()
            ],
            "layout": _layout(
                "Context growth: mean input tokens per turn",
                xaxis={"title": {"text": "turn"}},
                yaxis={"title": {"text": "tokens"}},
            ),
        }
    elif name == "leaks" and rows:
        figure = leak_waterfall(rows)
    elif rows and (plotted := _chart_column(columns)) is not None:
        unit = "USD" if plotted.endswith("_nanos") else plotted
        figure = bar_figure(
            f"{name}: {plotted.removesuffix('_nanos')} by {', '.join(by) or 'everything'}"
            + (" (USD)" if unit == "USD" else ""),
            [_label(r, [b for b in by if b in r]) for r in rows],
            [_axis(plotted, r.get(plotted)) for r in rows],
            unit,
        )
    return Section(f"report-{name}", f"Report: {name}", columns, rows, figure, note=result.reading)


def leak_totals(rows: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, int]]:
    """The leaks report's whole (its ``overall`` row, or its only row): (total spend, each leak) in nano-USD.

    ``essential`` is what is left once every leak is taken off, not a leak: the waterfall ends on it.
    """
    whole = next((r for r in rows if r.get("overall")), rows[-1] if rows else {})
    leaks = {
        key.removesuffix("_nanos"): int(value)
        for key, value in whole.items()
        if key.endswith("_nanos") and key not in ("total_cost_nanos", "essential_nanos") and value is not None
    }
    return int(whole.get("total_cost_nanos") or 0), leaks


def leak_waterfall(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spend, each leak taken off it, and the essential spend left: the leak waterfall."""
    total, leaks = leak_totals(rows)
    names = list(leaks)
    return {
        "data": [
            {
                "type": "waterfall",
                "orientation": "v",
                "measure": ["absolute", *["relative"] * len(names), "total"],
                "x": ["spend", *names, "essential"],
                "y": [usd_float(total), *[-usd_float(leaks[n]) for n in names], 0],
            }
        ],
        "layout": _layout("Leak waterfall (USD)", yaxis={"title": {"text": "USD"}}),
    }


def advice_section(run: ReportRunner, base: ReportOptions) -> Section:
    """``costplane advise`` on the page: the ranked changes with their monthly saving, from the same reports."""
    from costplane.config import ReportSettings, load_settings
    from costplane.reports.advice import gather

    found, _notes = gather(run, base, int(load_settings(ReportSettings).advise_floor_usd * 10**9))
    rows = []
    for o in found:
        shown = o.to_json()
        rows.append(
            {
                "monthly_saving_nanos": shown["monthly_saving_nanos"],
                "monthly_saving_usd": shown["monthly_saving_usd"],
                "kind": o.kind,
                "scope": "/".join(str(v) for v in o.scope.values() if v is not None),
                "confidence": o.confidence,
                "action": o.action,
            }
        )
    figure = (
        bar_figure(
            "Monthly saving by change (USD)",
            [f"{r['kind']} {r['scope']}" for r in rows],
            [usd_float(r["monthly_saving_nanos"]) for r in rows],
            "USD",
        )
        if rows
        else None
    )
    return Section(
        "advice",
        "What to change (costplane advise)",
        ("monthly_saving_nanos", "monthly_saving_usd", "kind", "scope", "confidence", "action"),
        rows,
        figure,
        note="Each saving is what the range's reports show, extrapolated to 30 days.",
    )


def _report_names() -> list[str]:
    from costplane.reports.definitions import REPORTS

    return list(REPORTS)


#: The sections before the per-report ones, in order; one line each.
OVERVIEW: list[Callable[[ReportRunner, ReportOptions], Section]] = [
    lambda run, base: spend_over_time(run, base, "feature"),
    lambda run, base: spend_over_time(run, base, "model"),
    lambda run, base: top(run, base, "tenant"),
    lambda run, base: top(run, base, "tenant", "feature"),
    lambda run, base: top(run, base, "tenant", "user"),
]


def budget_section(status_rows: Sequence[Mapping[str, Any]]) -> Section:
    """Budgets and their state (``budget status --format json`` rows)."""
    rows = [
        {
            "tenant": r["tenant"],
            "budget_id": r["budget_id"],
            "member": r["member"],
            "unit": r["unit"],
            "spent": r["spent"],
            "limit": r["limit"],
            "used": f"{float(r['used']):.1%}",
            "decision": r.get("action") or "",
            "ledger_spent": r.get("ledger_spent", ""),
            "drift": r.get("drift", ""),
        }
        for r in status_rows
    ]
    labels = [f"{r['budget_id']} {r['member']}" for r in rows]
    figure = bar_figure("Budget used (% of limit)", labels, [float(r["used"]) * 100 for r in status_rows], "%")
    return Section(
        "budgets",
        "Budgets and their state",
        ("tenant", "budget_id", "member", "unit", "spent", "limit", "used", "decision", "ledger_spent", "drift"),
        rows,
        figure,
    )


def decisions_section(decisions: Sequence[Mapping[str, Any]]) -> Section:
    rows = [
        {
            "at": _iso(d.get("at_ms")),
            "tenant": d["tenant"],
            "budget_id": d["budget_id"],
            "member": d["member"],
            "action": d["action"],
            "reason": d.get("reason") or "",
        }
        for d in decisions
    ]
    return Section(
        "decisions", "Enforcement decisions", ("at", "tenant", "budget_id", "member", "action", "reason"), rows
    )


def alerts_section(alerts: Sequence[Mapping[str, Any]]) -> Section:
    rows = [
        {
            "at": _iso(a.get("occurred_at")),
            "kind": a.get("kind"),
            "action": a.get("action"),
            "severity": a.get("severity"),
            "tenant": a.get("tenant"),
            "summary": a.get("summary"),
        }
        for a in alerts
    ]
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["kind"])] = counts.get(str(r["kind"]), 0) + (1 if r["action"] == "trigger" else 0)
    figure = bar_figure("Alerts triggered by kind", list(counts), list(counts.values()), "alerts") if rows else None
    return Section(
        "alerts", "Alerts in the range", ("at", "kind", "action", "severity", "tenant", "summary"), rows, figure
    )


def _iso(ms: Any) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_sections(
    run: ReportRunner,
    base: ReportOptions,
    *,
    budgets: Sequence[Mapping[str, Any]] | None = None,
    decisions: Sequence[Mapping[str, Any]] | None = None,
    alerts: Sequence[Mapping[str, Any]] | None = None,
) -> list[Section]:
    """The overview, every report, then budgets, decisions and alerts when the caller has them.

    ``base`` carries the range and tenant (``ReportOptions.parse("spend", since=…, until=…, tenant=…)``).
    """
    sections = [make(run, base) for make in OVERVIEW]
    sections += [report_section(run, base, name) for name in _report_names()]
    sections.append(advice_section(run, base))
    if budgets is not None:
        sections.append(budget_section(budgets))
    if decisions is not None:
        sections.append(decisions_section(decisions))
    if alerts is not None:
        sections.append(alerts_section(alerts))
    return sections


# -- the page ---------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px; color: #1d2330; }
h1 { margin-bottom: 4px; } .meta { color: #667; margin-bottom: 24px; }
section { display: flex; flex-wrap: wrap; gap: 24px; border-top: 1px solid #dde; padding: 16px 0; }
section h2 { flex-basis: 100%; margin: 0; font-size: 1.2em; }
.chart { flex: 1 1 520px; min-height: 360px; } .numbers { flex: 1 1 420px; overflow-x: auto; max-height: 420px; }
table { border-collapse: collapse; font-size: 12px; } th, td { padding: 3px 8px; border-bottom: 1px solid #eef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .note { flex-basis: 100%; color: #556; }
"""


#: Columns that hold a fraction: shown as a percentage (the cell's data-value keeps the exact number).
RATIOS = frozenset({"share", "share_of_tenant", "hit_rate", "retry_rate", "growth_rate"})


def _shown(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1%}" if column in RATIOS else f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _cell(column: str, value: Any) -> str:
    shown = _shown(column, value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return (
        f'<td data-col="{html.escape(column)}" data-value="{html.escape(json.dumps(value, default=str))}"'
        f"{' class=num' if numeric else ''}>{html.escape(shown)}</td>"
    )


def _section_html(section: Section) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    body = "".join("<tr>" + "".join(_cell(c, row.get(c)) for c in section.columns) + "</tr>" for row in section.rows)
    chart = (
        (f'<div class="chart" id="chart-{section.key}" data-figure="{html.escape(json.dumps(section.figure))}"></div>')
        if section.figure is not None and section.rows
        else ""
    )
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    empty = "" if section.rows else '<p class="note">nothing in this range</p>'
    return (
        f'<section id="{section.key}" data-section="{section.key}"><h2>{html.escape(section.title)}</h2>{note}'
        f'{chart}<div class="numbers"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"{empty}</div></section>"
    )


DRAW = """
document.querySelectorAll('.chart[data-figure]').forEach(function (el) {
  var fig = JSON.parse(el.getAttribute('data-figure'));
  Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, displayModeBar: false, responsive: true});
});
"""


def render(sections: Sequence[Section], title: str, subtitle: str) -> str:
    """The whole page as one string: Plotly's bundle, the styles, the data and the drawing script inlined."""
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs().replace("</script", "<\\/script")
    body = "".join(_section_html(s) for s in sections)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style><script>{bundle}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><div class=meta>{html.escape(subtitle)}</div>{body}"
        f"<script>{DRAW}</script></body></html>"
    )


def subtitle_for(base: ReportOptions, generated: datetime) -> str:
    def when(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    scope = f"tenant {base.tenant}" if base.tenant else "every tenant"
    end = when(base.until) if base.until else "now"
    return (
        f"{scope}, from {when(base.since)} to {end}; "
        f"generated {generated.isoformat(timespec='seconds').replace('+00:00', 'Z')}"
    )
