"""``costplane detectors show|set|reset|apply``: per-tenant detector thresholds on the compacted detectors topic.

The topic is the source of truth (key = tenant, or ``*`` for the default every tenant starts from; value = JSON of
the settings it overrides; a tombstone goes back to the defaults). Every stream worker follows it and applies a
change from the next judged minute, without a restart. Everything is validated here, before it is published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json, read_text, usage_error

detectors_app = typer.Typer(
    help="Detector thresholds (retry storms, spikes, cache drops, …): the default and per-tenant overrides.",
    no_args_is_help=True,
)

TOPIC = "detectors"
TENANT_HELP = "Tenant id, or '*' for the default every tenant without its own thresholds uses."


def register(app: typer.Typer) -> None:
    app.add_typer(detectors_app, name="detectors")


def read_records() -> dict[str, dict[str, Any]]:
    """The records on the topic, parsed; one that cannot be read is left out with a warning line (the worker
    ignores it the same way)."""
    from confluent_kafka import KafkaException

    from costplane.cli.budget import read_budget_records
    from costplane.streams.detectors.overrides import decode_record

    try:
        stored = read_budget_records(topic=TOPIC)
    except KafkaException as exc:
        typer.secho(f"cannot read the detectors topic: {exc.args[0] if exc.args else exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    out: dict[str, dict[str, Any]] = {}
    for key, value in stored.items():
        try:
            out[key] = decode_record(key, value)
        except ValueError as exc:
            typer.secho(f"warning: stored thresholds for {key[:128]!r} are ignored: {exc}", fg="yellow", err=True)
    return out


def _publish(changes: list[Any]) -> None:
    from costplane.cli.budget import _produce
    from costplane.streams.detectors.overrides import encode_record

    _produce([(c.key, None if c.after is None else encode_record(c.after)) for c in changes], topic=TOPIC)


def _print_changes(changes: list[Any], verb: str) -> None:
    out = console()
    if not changes:
        out.print("no changes")
        return
    for c in changes:
        who = "default (*)" if c.key == "*" else f"tenant {c.key}"
        out.print(f"{verb} {who}" + (" (reset to the default)" if c.after is None else ""))
        for line in c.lines():
            out.print(f"  {line}")


@detectors_app.command("show")
def show(
    tenant: Annotated[str | None, typer.Option("--tenant", help=TENANT_HELP)] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (every setting, exact decimals as strings).")
    ] = False,
) -> None:
    """The thresholds in force: the built-in defaults, the '*' overrides and each tenant's overrides."""
    from costplane.streams.detectors.overrides import DEFAULT_KEY, check_key, resolve, to_json_values

    if tenant is not None:
        try:
            check_key(tenant)
        except ValueError as exc:
            raise usage_error(f"invalid --tenant: {exc}") from None
    records = read_records()
    resolved = resolve(records)
    if tenant is None:
        data: dict[str, Any] = {
            "default": resolved.default.to_mapping(),
            "default_overrides": to_json_values(records.get(DEFAULT_KEY, {})),
            "tenants": {t: to_json_values(o) for t, o in sorted(records.items()) if t != DEFAULT_KEY},
            "invalid": resolved.errors,
        }
    else:
        config = resolved.default if tenant == DEFAULT_KEY else resolved.tenants.get(tenant, resolved.default)
        data = {
            "tenant": tenant,
            "config": config.to_mapping(),
            "default_overrides": to_json_values(records.get(DEFAULT_KEY, {})),
            "overrides": to_json_values(records.get(tenant, {})) if tenant != DEFAULT_KEY else {},
            "invalid": {k: v for k, v in resolved.errors.items() if k in (tenant, DEFAULT_KEY)},
        }
    if json_out:
        print_json(data)
    else:
        _show_table(data)


def _show_table(data: dict[str, Any]) -> None:
    from rich.table import Table

    config = data.get("config") or data["default"]
    own = data.get("overrides", {})
    defaults = data["default_overrides"]
    title = f"detector thresholds for tenant {data['tenant']}" if "tenant" in data else "default detector thresholds"
    table = Table("setting", "value", "set by", title=title)
    for name, value in config.items():
        source = "tenant" if name in own else "default (*)" if name in defaults else "built-in"
        table.add_row(name, ",".join(value) if isinstance(value, list) else str(value), source)
    out = console()
    out.print(table)
    tenants = data.get("tenants")
    if tenants:
        overrides = Table("tenant", "overrides", title="tenants with their own thresholds")
        for name, values in tenants.items():
            overrides.add_row(name, ", ".join(f"{k}={_plain(v)}" for k, v in values.items()) or "(none)")
        out.print(overrides)
    for key, error in data["invalid"].items():
        out.print(f"[red]not applied: {'default (*)' if key == '*' else 'tenant ' + key}: {error}[/]")


def _plain(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


@detectors_app.command("set")
def set_thresholds(
    tenant: Annotated[str, typer.Option("--tenant", help=TENANT_HELP)],
    assignments: Annotated[
        list[str], typer.Argument(help="key=value settings, e.g. retry_ratio=0.2 min_retries=5 (see `show`).")
    ],
) -> None:
    """Change some thresholds of a tenant (or of the default); the others it overrides are kept."""
    from costplane.streams.detectors import overrides

    try:
        values = overrides.assignments(assignments)
        overrides.parse_record(tenant, values)  # refuse before reading the topic
    except ValueError as exc:
        raise usage_error(f"invalid thresholds: {exc}") from None
    try:
        change = overrides.plan_set(read_records(), tenant, values)
    except ValueError as exc:
        raise usage_error(f"invalid thresholds: {exc}") from None
    _publish([change])
    _print_changes([change], "set")


@detectors_app.command("reset")
def reset(tenant: Annotated[str, typer.Option("--tenant", help=TENANT_HELP)]) -> None:
    """Remove a tenant's own thresholds (it uses the default again), or with '*' the default's overrides."""
    from costplane.streams.detectors import overrides

    try:
        overrides.check_key(tenant)
        change = overrides.plan_reset(read_records(), tenant)
    except ValueError as exc:
        raise usage_error(f"cannot reset: {exc}") from None
    _publish([change])
    _print_changes([change], "reset")


@detectors_app.command("apply")
def apply(
    file: Annotated[
        Path, typer.Argument(help="YAML: `default: {setting: value}` and `tenants: {TENANT: {setting: value}}`.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; publish nothing.")] = False,
) -> None:
    """Replace the overrides of the default and of each tenant named in a YAML file (others are kept).

    The whole file is validated first: nothing is published if any of it is invalid."""
    import yaml

    from costplane.streams.detectors import overrides

    text = read_text(file)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise usage_error(f"invalid thresholds file {file}: not YAML ({exc})") from None
    try:
        overrides.parse_document(document)  # refuse before reading the topic
        changes = overrides.plan_apply(read_records(), document)
    except (ValueError, RecursionError) as exc:
        raise usage_error(f"invalid thresholds file {file}: {exc}") from None
    if dry_run:
        _print_changes(changes, "would change")
        return
    if changes:
        _publish(changes)
    _print_changes(changes, "changed")
