"""One self-contained HTML file of the reports: each chart beside the numbers it draws, readable offline.

Charts are Plotly figures; the page inlines Plotly's own JavaScript bundle (shipped inside the ``plotly`` wheel),
its styles and its data, so it opens from a laptop on a plane, from a mail attachment, or in a CI artifact, and
asks the network for nothing.

The numbers come from the same report functions as ``costplane report … --format json`` (a :data:`ReportRunner`:
``costplane.cli.report.collect``, or the sink worker's ``/api/report`` in the demo). Each section is one entry of
:data:`SECTIONS`, a function from the runner and the range to a :class:`Section`, so adding a report to the page
is one line.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costplane.streams.sink.query import ReportSpec, format_usd

ReportRunner = Callable[[ReportSpec], list[dict[str, Any]]]
TOKEN_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass(frozen=True, slots=True)
class Window:
    """The report's range and tenant (``None``: unbounded / every tenant)."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None

    def spec(self, *by: str) -> ReportSpec:
        return ReportSpec(by=by, since=self.since, until=self.until, tenant=self.tenant)


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
    return {"title": {"text": title}, "margin": {"l": 60, "r": 20, "t": 50, "b": 60}, "height": 360,
            "legend": {"orientation": "h"}, **more}


def bar_figure(title: str, labels: Sequence[str], values: Sequence[float], axis: str) -> dict[str, Any]:
    return {"data": [{"type": "bar", "x": list(labels), "y": list(values), "name": axis}],
            "layout": _layout(title, yaxis={"title": {"text": axis}})}


def stacked_figure(title: str, rows: Sequence[Mapping[str, Any]], x: str, stack: str, value: str,
                   axis: str) -> dict[str, Any]:
    """Bars of ``value`` per ``x``, stacked by ``stack``."""
    xs = sorted({str(r[x]) for r in rows})
    traces = []
    for name in sorted({str(r[stack]) for r in rows}):
        by_x = {str(r[x]): r[value] for r in rows if str(r[stack]) == name}
        traces.append({"type": "bar", "name": name, "x": xs, "y": [usd_float(by_x.get(t, 0)) if value == "cost_nanos"
                                                                    else by_x.get(t, 0) for t in xs]})
    return {"data": traces, "layout": _layout(title, barmode="stack", yaxis={"title": {"text": axis}})}


def usd_float(nanos: int) -> float:
    """Dollars as a float for a chart's axis only; tables always show the exact decimal string."""
    return nanos / 1_000_000_000


# -- sections ---------------------------------------------------------------------------------------------------
def _time_dimension(run: ReportRunner, window: Window) -> str:
    """minute, hour or day: whichever gives a readable number of bars for the data in range."""
    days = run(window.spec("day"))
    if len(days) > 2:
        return "day"
    hours = run(window.spec("hour"))
    return "hour" if len(hours) > 2 else "minute"


def spend_over_time(run: ReportRunner, window: Window, stack: str) -> Section:
    when = _time_dimension(run, window)
    rows = run(window.spec(when, stack))
    return Section(f"spend-by-{stack}", f"Spend over time by {stack}", (when, stack, "attempts", "cost_nanos",
                                                                          "cost_usd"), rows,
                   stacked_figure(f"Spend per {when} by {stack} (USD)", rows, when, stack, "cost_nanos", "USD"))


def top(run: ReportRunner, window: Window, *by: str, limit: int = 15) -> Section:
    rows = sorted(run(window.spec(*by)), key=lambda r: -int(r["cost_nanos"]))[:limit]
    labels = [" / ".join(str(r[d]) for d in by) for r in rows]
    name = " × ".join(by)
    return Section(f"top-{'-'.join(by)}", f"Top {name} by spend", (*by, "events", "attempts", "cost_nanos",
                                                                    "cost_usd"), rows,
                   bar_figure(f"Spend by {name} (USD)", labels, [usd_float(r["cost_nanos"]) for r in rows], "USD"))


def retries(run: ReportRunner, window: Window) -> Section:
    """Per feature: attempts beyond the first of each request, and what the failed attempts cost."""
    by_status = run(window.spec("tenant", "feature", "status"))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in by_status:
        key = (str(r["tenant"]), str(r["feature"]))
        row = out.setdefault(key, {"tenant": key[0], "feature": key[1], "attempts": 0, "failed_attempts": 0,
                                   "cost_nanos": 0, "wasted_cost_nanos": 0})
        row["attempts"] += int(r["attempts"])
        row["cost_nanos"] += int(r["cost_nanos"])
        if r["status"] != "ok":
            row["failed_attempts"] += int(r["attempts"])
            row["wasted_cost_nanos"] += int(r["cost_nanos"])
    for row in out.values():
        row["wasted_usd"] = format_usd(row["wasted_cost_nanos"])
    rows = sorted(out.values(), key=lambda r: -r["wasted_cost_nanos"])
    labels = [f"{r['tenant']} / {r['feature']}" for r in rows]
    return Section("retries", "Retries and their waste", ("tenant", "feature", "attempts", "failed_attempts",
                                                          "wasted_cost_nanos", "wasted_usd"), rows,
                   bar_figure("Cost of failed attempts (USD)", labels,
                              [usd_float(r["wasted_cost_nanos"]) for r in rows], "USD"),
                   note="Failed attempts are billed like any other: a retry loop pays for every failure.")


def caching(run: ReportRunner, window: Window) -> Section:
    rows = run(window.spec("tenant", "feature"))
    table = []
    for r in rows:
        prompt = int(r["input_tokens"]) + int(r["cached_input_tokens"])
        table.append({"tenant": r["tenant"], "feature": r["feature"], "prompt_tokens": prompt,
                      "cached_input_tokens": int(r["cached_input_tokens"]),
                      "cached_share": f"{int(r['cached_input_tokens']) / prompt:.1%}" if prompt else "0.0%"})
    labels = [f"{r['tenant']} / {r['feature']}" for r in table]
    shares = [r["cached_input_tokens"] / r["prompt_tokens"] * 100 if r["prompt_tokens"] else 0 for r in table]
    return Section("caching", "Prompt caching", ("tenant", "feature", "prompt_tokens", "cached_input_tokens",
                                                 "cached_share"), table,
                   bar_figure("Share of prompt tokens read from cache (%)", labels, shares, "%"))


def context_growth(run: ReportRunner, window: Window) -> Section:
    """Mean prompt per conversation turn: a context resent and grown on every turn is a leak of its own."""
    rows = [r for r in run(window.spec("turn")) if r["turn"] is not None]
    table = [{"turn": r["turn"], "attempts": r["attempts"],
              "mean_prompt_tokens": (int(r["input_tokens"]) + int(r["cached_input_tokens"])) // int(r["attempts"])}
             for r in rows if int(r["attempts"])]
    figure = {"data": [{"type": "scatter", "mode": "lines+markers", "x": [r["turn"] for r in table],
                        "y": [r["mean_prompt_tokens"] for r in table], "name": "mean prompt tokens"}],
              "layout": _layout("Context growth: mean prompt tokens per turn", xaxis={"title": {"text": "turn"}},
                                yaxis={"title": {"text": "tokens"}})}
    return Section("context-growth", "Context growth", ("turn", "attempts", "mean_prompt_tokens"), table, figure)


#: Every section of the page, in order. One line per report.
SECTIONS: list[Callable[[ReportRunner, Window], Section]] = [
    lambda run, w: spend_over_time(run, w, "feature"),
    lambda run, w: spend_over_time(run, w, "model"),
    lambda run, w: top(run, w, "tenant"),
    lambda run, w: top(run, w, "tenant", "feature"),
    lambda run, w: top(run, w, "tenant", "user_id"),
    retries,
    caching,
    context_growth,
]


def budget_section(status_rows: Sequence[Mapping[str, Any]]) -> Section:
    """Budgets and their state (``budget status --format json`` rows)."""
    rows = [{"tenant": r["tenant"], "budget_id": r["budget_id"], "member": r["member"], "unit": r["unit"],
             "spent": r["spent"], "limit": r["limit"], "used": f"{float(r['used']):.1%}",
             "decision": r.get("action") or "", "ledger_spent": r.get("ledger_spent", ""),
             "drift": r.get("drift", "")} for r in status_rows]
    labels = [f"{r['budget_id']} {r['member']}" for r in rows]
    figure = bar_figure("Budget used (% of limit)", labels, [float(r["used"]) * 100 for r in status_rows], "%")
    return Section("budgets", "Budgets and their state", ("tenant", "budget_id", "member", "unit", "spent", "limit",
                                                          "used", "decision", "ledger_spent", "drift"), rows, figure)


def decisions_section(decisions: Sequence[Mapping[str, Any]]) -> Section:
    rows = [{"at": _iso(d.get("at_ms")), "tenant": d["tenant"], "budget_id": d["budget_id"], "member": d["member"],
             "action": d["action"], "reason": d.get("reason") or ""} for d in decisions]
    return Section("decisions", "Enforcement decisions", ("at", "tenant", "budget_id", "member", "action", "reason"),
                   rows)


def alerts_section(alerts: Sequence[Mapping[str, Any]]) -> Section:
    rows = [{"at": _iso(a.get("occurred_at")), "kind": a.get("kind"), "action": a.get("action"),
             "severity": a.get("severity"), "tenant": a.get("tenant"), "summary": a.get("summary")} for a in alerts]
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["kind"])] = counts.get(str(r["kind"]), 0) + (1 if r["action"] == "trigger" else 0)
    figure = bar_figure("Alerts triggered by kind", list(counts), list(counts.values()), "alerts") if rows else None
    return Section("alerts", "Alerts in the range", ("at", "kind", "action", "severity", "tenant", "summary"), rows,
                   figure)


def _iso(ms: Any) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_sections(run: ReportRunner, window: Window, *, budgets: Sequence[Mapping[str, Any]] | None = None,
                   decisions: Sequence[Mapping[str, Any]] | None = None,
                   alerts: Sequence[Mapping[str, Any]] | None = None) -> list[Section]:
    """Every report section, then budgets, decisions and alerts when the caller has them."""
    sections = [make(run, window) for make in SECTIONS]
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


def _cell(column: str, value: Any) -> str:
    shown = "" if value is None else str(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return (f'<td data-col="{html.escape(column)}" data-value="{html.escape(json.dumps(value, default=str))}"'
            f'{" class=num" if numeric else ""}>{html.escape(shown)}</td>')


def _section_html(section: Section) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    body = "".join("<tr>" + "".join(_cell(c, row.get(c)) for c in section.columns) + "</tr>" for row in section.rows)
    chart = (f'<div class="chart" id="chart-{section.key}" data-figure="{html.escape(json.dumps(section.figure))}">'
             "</div>") if section.figure is not None and section.rows else ""
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    empty = "" if section.rows else '<p class="note">nothing in this range</p>'
    return (f'<section id="{section.key}" data-section="{section.key}"><h2>{html.escape(section.title)}</h2>{note}'
            f'{chart}<div class="numbers"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"{empty}</div></section>")


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
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style><script>{bundle}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><div class=meta>{html.escape(subtitle)}</div>{body}"
            f"<script>{DRAW}</script></body></html>")


def subtitle_for(window: Window, generated: datetime) -> str:
    def when(moment: datetime | None, default: str) -> str:
        return moment.isoformat().replace("+00:00", "Z") if moment else default

    scope = f"tenant {window.tenant}" if window.tenant else "every tenant"
    return (f"{scope}, from {when(window.since, 'the first event')} to {when(window.until, 'the last event')}; "
            f"generated {generated.isoformat(timespec='seconds').replace('+00:00', 'Z')}")
