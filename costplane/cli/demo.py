"""``costplane demo``: the whole control plane on the real local stack, in about a minute and a half.

Starts the stack if needed, a stream worker and a sink worker, applies the demo budgets, listens for alerts on a
local webhook receiver, and runs simulated services through the real ``UsagePublisher`` and ``BudgetGuard``.
A live display shows events, spend, decisions, guard blocks and alerts as they happen; the closing story is read
back from ClickHouse (through the sink worker, which owns it) and Redis, and the HTML report is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json
from costplane.logging import configure_logging


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def _default_dir() -> Path:
    from costplane.config import default_state_dir

    return default_state_dir().parent / "demo"


def _live_view(tally: Any) -> Any:
    from rich.console import Group
    from rich.table import Table

    from costplane.budget_status import usd

    head = Table.grid(padding=(0, 3))
    for _ in range(6):
        head.add_column()
    head.add_row(
        "[bold]elapsed", "[bold]story time", "[bold]events", "[bold]events/s", "[bold]spend", "[bold]guard blocks"
    )
    head.add_row(
        f"{tally.elapsed():.0f} / {tally.seconds:.0f} s",
        f"minute {tally.sim_minute:.1f}",
        f"{len(tally.events):,}",
        f"{tally.recent_rate:.0f}",
        f"${usd(tally.spend_nanos)[:8]}",
        f"{tally.blocked:,} (+{tally.degraded} degraded)",
    )
    decisions = Table(
        "decision", "budget", "member", title="decisions (stream worker → Redis)", title_justify="left", expand=False
    )
    for d in tally.decisions[-6:]:
        decisions.add_row(d["action"], d["budget_id"], d["member"])
    alerts = Table(
        "alert", "state", "tenant", "summary", title="alerts (at the local webhook receiver)", title_justify="left"
    )
    for a in tally.alerts[-6:]:
        alerts.add_row(str(a.get("kind")), str(a.get("action")), str(a.get("tenant")), str(a.get("summary"))[:70])
    return Group(head, f"[dim]{tally.phase}[/]", decisions, alerts)


def _story(outcome: Any) -> None:
    """The closing story, for people."""
    from rich.table import Table

    from costplane.budget_status import usd

    out = console()
    story, tally = outcome.story, outcome.tally
    out.rule("[bold]what happened")
    spend = Table(
        "tenant", "feature", "attempts", "USD", title="spend by tenant and feature (ClickHouse)", title_justify="left"
    )
    for row in story["spend"]:
        spend.add_row(str(row["tenant"]), str(row["feature"]), f"{row['attempts']:,}", row["cost_usd"])
    out.print(spend)
    out.print(
        f"[bold]{len(tally.events):,}[/] attempts published, [bold]${usd(outcome.total_cost_nanos)}[/] "
        "in ClickHouse (exact nano-USD)."
    )
    for d in tally.decisions:
        out.print(f"• [bold]{d['action']}[/] {d['member']} on [cyan]{d['budget_id']}[/]: {d.get('reason') or ''}")
    for row in story["budget_status"]:
        if row.get("action"):
            ledger = f", ledger {row['ledger_spent']:,} (drift {row['drift']:,})" if "ledger_spent" in row else ""
            out.print(
                f"  Redis holds [bold]{row['action']}[/] for {row['member']} until {row['decision_until']}: "
                f"counter {row['spent']:,} of {row['limit']:,} {row['unit']}{ledger}"
            )
    for service, n in sorted(story["blocked_by_service"].items()):
        out.print(f"  the guard refused {n:,} call(s) of {service}")
    if tally.degraded:
        out.print(f"  {tally.degraded:,} support answers went to the cheaper model after the degrade budget ran out")
    for a in tally.alerts:
        out.print(f"• alert [bold]{a.get('kind')}[/] {a.get('action')} for {a.get('tenant')}: {a.get('summary')}")
    for w in story["waste"][:3]:
        out.print(
            f"• retry waste: {w.get('feature')} on {w.get('model')} paid ${w['wasted_cost_usd']} for "
            f"{w['failed_attempts']:,} failed attempt(s)"
        )
    if story.get("leaks"):
        total, leaks = story["leaks"]
        biggest = sorted(((v, k) for k, v in leaks.items() if v), reverse=True)[:4]
        if biggest:
            out.print(
                f"• leak waterfall: of ${usd(total)}, "
                + ", ".join(f"{name.replace('_', ' ')} ${usd(value)}" for value, name in biggest)
            )
    for a in story.get("advice", [])[:3]:
        out.print(f"• advice: ${a['monthly_saving_usd']}/month — {a['kind']} in {a['scope']}: {a['action']}")
    out.rule()
    out.print(f"report: [bold]{outcome.report_html}[/] — open it in a browser (it works offline)")
    out.print(f"this run's budgets in Redis: COSTPLANE_REDIS_KEY_PREFIX={outcome.redis_prefix} costplane budget status")
    out.print(
        f"its topics: COSTPLANE_KAFKA_TOPIC_PREFIX={outcome.topic_prefix} costplane decisions tail --from-beginning"
    )


def demo(
    seconds: Annotated[
        int, typer.Option("--seconds", help="Wall-clock length of the simulated traffic (at least 30).")
    ] = 90,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of the live display.")] = False,
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Loopback port of the demo's alert receiver (0: any free port)."),
    ] = 0,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Where each run writes its report, event record "
            "and worker logs (default: the state directory's demo folder).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated services.")] = 7,
) -> None:
    """Run the whole control plane on the local stack: workers, budgets, guard, alerts, ClickHouse, HTML report."""
    from rich.live import Live

    from costplane.demo_run import DemoError, run_demo
    from costplane.demo_story import MIN_SECONDS

    err = console(stderr=True)
    if "COSTPLANE_LOG_LEVEL" not in os.environ:  # the live display tells the story; info logs would interleave
        configure_logging("WARNING", "json" if os.environ.get("COSTPLANE_LOG_FORMAT") == "json" else "auto")
    if seconds < MIN_SECONDS:
        err.print(f"[red]--seconds must be at least {MIN_SECONDS}: the story needs that long to be told[/]")
        raise typer.Exit(2)
    base = out_dir or _default_dir()
    live = Live(console=err, refresh_per_second=4, transient=False) if not as_json else None

    def progress(message: str) -> None:
        if not as_json:
            err.print(f"[dim]{message}[/]")

    shown = [0.0]  # when the display was last rebuilt: four times a second is plenty, the loop ticks 20 times

    def refresh(tally: Any) -> None:
        now = time.monotonic()
        if live is None or (now - shown[0] < 0.25 and tally.phase == "services running"):
            return
        shown[0] = now
        if not live.is_started:
            live.start()
        live.update(_live_view(tally))

    try:
        outcome = run_demo(seconds, seed, port, base, progress, refresh, _write_report)
    except DemoError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    finally:
        if live is not None and live.is_started:
            live.stop()
    if as_json:
        print_json(outcome.summary())
    else:
        _story(outcome)


def _write_report(run: Any, story: dict[str, Any], path: Path) -> None:
    """The HTML report over the run's data, and the story's numbers from the same report rows."""
    from datetime import UTC, datetime

    from costplane.report_html import build_sections, leak_totals, render, subtitle_for
    from costplane.reports.options import ReportOptions

    base = ReportOptions.parse("spend", since="1d")
    sections = build_sections(
        run, base, budgets=story["budget_status"], decisions=story["decisions"], alerts=story["alerts"]
    )
    by_key = {s.key: s for s in sections}
    story["spend"] = by_key["top-tenant-feature"].rows
    story["waste"] = [r for r in by_key["report-retries"].rows if r.get("wasted_cost_nanos")]
    story["advice"] = by_key["advice"].rows
    leaks = by_key.get("report-leaks")
    story["leaks"] = leak_totals(leaks.rows) if leaks is not None else None
    path.write_text(
        render(sections, "costplane demo report", subtitle_for(base, datetime.now(tz=UTC))), encoding="utf-8"
    )
