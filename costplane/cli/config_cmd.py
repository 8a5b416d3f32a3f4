"""``costplane config show|env``: the effective settings (secrets masked) and the documented variable table."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from rich.table import Table

from costplane import config as config_module
from costplane.cli.output import console, print_json
from costplane.redact import mask_url

config_app = typer.Typer(help="Show the effective configuration and every COSTPLANE_* variable.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def settings_classes() -> list[type[BaseSettings]]:
    """Every component's settings class, in the order costplane/config.py defines them."""
    return config_module.settings_classes()


def variable_rows() -> list[dict[str, str]]:
    """One row per environment variable: name, default, description, component."""
    rows: list[dict[str, str]] = []
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            if field.default_factory is not None:
                default = "(computed)"
            elif isinstance(field.default, SecretStr):
                default = "(secret)"
            elif field.default is None:
                default = "unset"
            else:
                default = str(field.default)
            rows.append(
                {
                    "variable": f"{prefix}{name.upper()}",
                    "default": default,
                    "description": field.description or "",
                    "component": cls.__name__,
                }
            )
    return rows


def markdown_table() -> str:
    """The configuration reference as Markdown (docs/configuration.md embeds exactly this)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    component = ""
    for row in variable_rows():
        if row["component"] != component:
            component = row["component"]
            lines.append(f"| **{component}** | | |")
        lines.append(f"| `{row['variable']}` | `{row['default']}` | {row['description']} |")
    return "\n".join(lines) + "\n"


def _safe(value: Any) -> Any:
    """A setting as printed: secrets as ``**********``, any other text with URL credentials masked."""
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value if isinstance(value, int | float | bool | type(None)) else mask_url(str(value))


@config_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Effective settings of every component (environment, then the running dev stack, then defaults)."""
    data = {
        cls.__name__: {name: _safe(getattr(config_module.load_settings(cls), name)) for name in cls.model_fields}
        for cls in settings_classes()
    }
    if as_json:
        print_json(data)
        return
    for component, values in data.items():
        table = Table(title=component, show_header=False)
        for key, value in values.items():
            table.add_row(key, str(value))
        console().print(table)


@config_app.command("env")
def env(markdown: bool = typer.Option(False, "--markdown", help="Print the Markdown reference table.")) -> None:
    """Every COSTPLANE_* environment variable with its default and meaning."""
    if markdown:
        typer.echo(markdown_table(), nl=False)
        return
    table = Table(title="COSTPLANE_* settings")
    for column in ("variable", "default", "meaning"):
        table.add_column(column)
    for row in variable_rows():
        table.add_row(row["variable"], row["default"], row["description"])
    console().print(table)
