"""``costplane budget set|list|delete|apply|status``: budgets on the compacted budgets topic, and where they stand.

The topic is the source of truth (key = budget id, value = the budget's JSON, a tombstone deletes); every worker
reads it in full and applies a change to the current window at once. ``status`` reads the live Redis state the
guard enforces (and, with ``--reconcile``, the ClickHouse ledger beside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json, read_text, usage_error

budget_app = typer.Typer(
    help="Budgets: limits per scope and period, enforced by the worker and the guard.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(budget_app, name="budget")


def _produce(records: list[tuple[str, bytes | None]], topic: str = "budgets") -> None:
    from confluent_kafka import Producer

    from costplane.config import KafkaSettings, WorkerSettings, load_settings
    from costplane.streams.topics import create_topics

    kafka = load_settings(KafkaSettings)
    create_topics(kafka, load_settings(WorkerSettings))
    producer = Producer({**kafka.confluent_config(), "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(kafka.topic(topic), key=key.encode(), value=value)
    if producer.flush(30):
        raise typer.Exit(1)


def read_budgets(timeout_s: float = 20.0) -> dict[str, Any]:
    """The current budgets (latest value per id, tombstones applied) from the budgets topic.

    A stored budget that no longer validates (written before a rule existed) is left out with a warning line:
    the worker and the guard skip it the same way; ``budget delete`` can still remove it."""
    from pydantic import ValidationError

    from costplane.budgets import Budget

    budgets: dict[str, Any] = {}
    for key, value in read_budget_records(timeout_s).items():
        try:
            budgets[key] = Budget.from_json(value)
        except (ValidationError, ValueError) as exc:
            typer.secho(
                f"warning: stored budget {key[:128]!r} is not valid and is ignored: {error_line(exc)}",
                fg=typer.colors.YELLOW,
                err=True,
            )
    return budgets


def read_budget_records(timeout_s: float = 20.0, topic: str = "budgets") -> dict[str, bytes]:
    """A compacted topic's latest value per key (tombstones applied), unparsed: the budgets topic by default."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from costplane.config import KafkaSettings, load_settings

    kafka = load_settings(KafkaSettings)
    topic = kafka.topic(topic)
    consumer = Consumer(
        {**kafka.confluent_config(), "group.id": "costplane-budget-reader", "enable.auto.commit": False}
    )
    budgets: dict[str, bytes] = {}
    try:
        info = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if info is None or info.error is not None:
            return budgets
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign(tps)
        pos = {p: 0 for p in ends}
        import time

        deadline = time.monotonic() + timeout_s
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                pos[int(msg.partition() or 0)] = int(msg.offset() or 0) + 1
                key = (msg.key() or b"").decode()
                value = msg.value()
                if value is None:
                    budgets.pop(key, None)
                else:
                    budgets[key] = value
    finally:
        consumer.close()
    return budgets


def error_line(exc: BaseException) -> str:
    """One line for a budget that cannot be used: pydantic's multi-line report folded to its first error."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return " ".join(str(exc).split())


def check_degrade_model(budget: Any) -> None:
    """A ``degrade:MODEL`` budget must name a model the price catalog prices: the guard's answer sends calls to
    it, and a model nobody can price would make every degraded call uncountable."""
    from costplane.budgets import BudgetError
    from costplane.pricing.catalog import default_catalog

    model = budget.degrade_model
    if model is not None and not default_catalog().is_priced(None, model):
        raise BudgetError(f"action degrade:{model[:80]}: the price catalog does not price model {model[:80]!r}")


def _next_version(budget: Any, existing: dict[str, Any]) -> Any:
    prior = existing.get(budget.id)
    return budget.model_copy(update={"version": (prior.version + 1) if prior is not None else 1})


@budget_app.command("set")
def set_budget(
    budget_id: Annotated[str, typer.Argument(help="Budget id (letters, digits, . _ -).")],
    scope: Annotated[str, typer.Option("--scope", help="e.g. tenant=acme,user=* (* = one budget per member).")],
    period: Annotated[str, typer.Option("--period", help="day, month, rolling-1m, rolling-1h, rolling-24h.")] = "day",
    tz: Annotated[str, typer.Option("--tz", help="Timezone of calendar periods.")] = "UTC",
    limit_usd: Annotated[str | None, typer.Option("--limit-usd", help="Limit in USD (exact decimal).")] = None,
    limit_tokens: Annotated[int | None, typer.Option("--limit-tokens", help="Limit in tokens.")] = None,
    soft: Annotated[str, typer.Option("--soft", help="Soft thresholds, e.g. 0.5,0.8.")] = "",
    action: Annotated[str, typer.Option("--action", help="block, degrade:MODEL or notify.")] = "block",
    json_out: Annotated[bool, typer.Option("--json", help="Print the stored budget as JSON.")] = False,
) -> None:
    """Create or replace a budget (the worker applies it to the current window at once)."""
    from pydantic import ValidationError

    from costplane.budgets import Budget, BudgetError

    try:
        budget = Budget.from_cli(
            budget_id,
            scope=scope,
            period=period,
            tz=tz,
            limit_usd=limit_usd,
            limit_tokens=limit_tokens,
            soft=soft,
            action=action,
        )
        check_degrade_model(budget)
    except (BudgetError, ValidationError) as exc:
        raise usage_error(f"invalid budget: {error_line(exc)}") from None
    budget = _next_version(budget, read_budgets())
    _produce([(budget.id, budget.to_json().encode())])
    if json_out:
        print_json(budget.model_dump(mode="json"))
    else:
        console().print(
            f"budget {budget.id} v{budget.version}: {budget.limit_display()} per {budget.period} "
            f"for {budget.scope}, action {budget.action}"
        )


@budget_app.command("list")
def list_budgets(
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Print the budgets in force."""
    from rich.table import Table

    budgets = sorted(read_budgets().values(), key=lambda b: b.id)
    if fmt == "json":
        print_json([b.model_dump(mode="json") for b in budgets])
        return
    table = Table("id", "scope", "period", "tz", "limit", "soft", "action", "version")
    for b in budgets:
        table.add_row(
            b.id,
            ",".join(f"{k}={v}" for k, v in b.scope.items()),
            b.period,
            b.tz,
            b.limit_display(),
            ",".join(f"{x:g}" for x in b.soft),
            b.action,
            str(b.version),
        )
    console().print(table)


@budget_app.command("delete")
def delete_budget(budget_id: Annotated[str, typer.Argument(help="Budget id.")]) -> None:
    """Delete a budget (a tombstone on the compacted topic; standing decisions are lifted)."""
    if budget_id not in read_budget_records():
        raise usage_error(f"no budget {budget_id[:128]!r}; `costplane budget list` shows the budgets in force")
    _produce([(budget_id, None)])
    console().print(f"budget {budget_id} deleted")


@budget_app.command("apply")
def apply_budgets(
    file: Annotated[Path, typer.Argument(help="YAML file: a list of budgets with the same fields as `set`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the stored budgets as JSON.")] = False,
) -> None:
    """Validate every budget of a YAML file first, then write them all (nothing is written if one is invalid)."""
    from costplane.budgets import BudgetError, budgets_from_yaml

    text = read_text(file)
    try:
        parsed = budgets_from_yaml(text)
        for budget in parsed:
            check_degrade_model(budget)
    except (BudgetError, RecursionError) as exc:
        raise usage_error(f"invalid budgets file {file}: {error_line(exc)}") from None
    existing = read_budgets()
    stored = [_next_version(b, existing) for b in parsed]
    _produce([(b.id, b.to_json().encode()) for b in stored])
    if json_out:
        print_json([b.model_dump(mode="json") for b in stored])
    else:
        console().print(f"applied {len(stored)} budget(s)")


@budget_app.command("status")
def status(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    budget_id: Annotated[str | None, typer.Option("--budget", help="Only this budget id.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="Add the ClickHouse ledger's spend for the same window and the drift (counter - ledger).",
        ),
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="COSTPLANE_WORKER_API_URL",
            help="With --reconcile: ask this worker's /api/report (default: the chDB directory owner's).",
        ),
    ] = None,
) -> None:
    """Per budget and member: spent, limit, used, window end, standing decision and open reservations (live Redis)."""
    import time

    from costplane.budget_status_redis import UnknownScope, budgets_of, read_status
    from costplane.config import RedisSettings, load_settings
    from costplane.enforcers.keys import KeyLayout
    from costplane.enforcers.store import REDIS_ERRORS

    err = console(stderr=True)
    if fmt not in ("table", "json"):
        err.print(f"[red]--format must be table or json, not {fmt!r}[/]")
        raise typer.Exit(2)
    settings = load_settings(RedisSettings)
    try:
        client = _redis_client(settings)  # a cluster client connects as it is built
    except REDIS_ERRORS as exc:
        err.print(f"[red]budget status failed: {exc}[/]")
        raise typer.Exit(1) from None
    keys = KeyLayout(settings.key_prefix)
    try:
        rows = read_status(client, keys, int(time.time() * 1000), tenant=tenant, budget_id=budget_id)
        if reconcile and rows:
            rows = _reconciled(rows, budgets_of(rows, client, keys), api_url)
    except UnknownScope as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except REDIS_ERRORS + (OSError,) as exc:
        err.print(f"[red]budget status failed: {exc}[/]")
        raise typer.Exit(1) from None
    finally:
        client.close()
    if fmt == "json":
        print_json([r.to_json() for r in rows])
        return
    _status_table(rows, reconcile)


def _redis_client(settings: Any) -> Any:
    from costplane.enforcers.connect import open_client

    return open_client(settings, timeout_s=5)


def _reconciled(rows: list[Any], budgets: dict[tuple[str, str], Any], api_url: str | None) -> list[Any]:
    """Rows with their ledger spend; ClickHouse (or the worker owning it) unreachable is one error line."""
    import urllib.error

    from costplane.budget_status import reconcile
    from costplane.budget_status_redis import ledgers
    from costplane.cli.report import collect
    from costplane.streams.sink.errors import DirectoryOwned, SinkUnavailable

    try:
        return reconcile(rows, ledgers(rows, budgets, lambda options: collect(options, api_url).rows))
    except (DirectoryOwned, SinkUnavailable, urllib.error.URLError, ValueError) as exc:
        console(stderr=True).print(f"[red]reading the ledger failed: {exc}[/]")
        raise typer.Exit(1) from None


def _amount(value: int | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "usd":
        from costplane.budget_status import usd

        return "$" + usd(value)
    return f"{value:,} tok"


def _status_table(rows: list[Any], reconcile: bool) -> None:
    from datetime import UTC, datetime

    from rich.table import Table

    def when(ms: int | None) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M") if ms else ""

    # With the ledger beside the counter, the window and decision times give way (--format json has them all).
    columns = [
        "tenant",
        "budget",
        "member",
        "spent",
        "limit",
        "used",
        *(() if reconcile else ("window end (UTC)",)),
        "decision",
        *(() if reconcile else ("until",)),
        "open res.",
        *(("ledger", "drift") if reconcile else ()),
    ]
    table = Table(title="budget status (live Redis state)")
    for name in columns:
        table.add_column(
            name,
            no_wrap=name in ("tenant", "budget", "member", "decision"),
            justify="left" if name in ("tenant", "budget", "member", "decision") else "right",
        )
    for r in rows:
        cells = [r.tenant, r.budget_id, r.member, _amount(r.spent, r.unit), _amount(r.limit, r.unit), f"{r.used:.1%}"]
        cells += (
            [r.action or "", str(r.open_reservations)]
            if reconcile
            else [when(r.window_end_ms), r.action or "", when(r.decision_until_ms), str(r.open_reservations)]
        )
        if reconcile:
            fraction = r.drift_fraction
            cells += [
                _amount(r.ledger_spent, r.unit),
                _amount(r.drift, r.unit) + ("" if fraction is None else f" ({fraction:+.2%})"),
            ]
        table.add_row(*cells)
    console().print(table)
    if not rows:
        console().print("no budget members have spent or been decided on yet")


__all__ = ["budget_app", "read_budgets", "register", "json"]
