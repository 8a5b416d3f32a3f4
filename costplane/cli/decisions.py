"""``costplane decisions tail``: follow the decisions topic — blocks, degrades, lifts and threshold notices.

Reads with a throw-away consumer group (nothing is committed), from the end by default or ``--from-beginning``.
Lines for people, or the records themselves as JSON lines (``--json``).
"""

from __future__ import annotations

import json
from typing import Any

import typer

from costplane.cli.tail import RecordView, Undecodable, tail_command

decisions_app = typer.Typer(help="Enforcement decisions written by the stream worker.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(decisions_app, name="decisions")


def decision_line(record: dict[str, Any]) -> str:
    """One decision record as a line: when, what, who, why."""
    from costplane.budget_status import iso

    at = iso(int(record.get("at_ms") or 0))
    kind = record.get("type", "?")
    action = record.get("action", "?")
    what = action if kind == "decision" else f"{kind} {action}" if kind == "lift" else kind
    until = record.get("until_ms")
    tail = f" until {iso(int(until))}" if kind == "decision" and until else ""
    return (
        f"{at}  {what:<16} {record.get('budget_id', '?')}  {record.get('member', '?')}{tail}  "
        f"— {record.get('reason', '')}"
    )


def _view(tenant: str | None) -> RecordView[Any]:
    return RecordView(
        decode=_decode,
        keep=lambda record: isinstance(record, dict) and (tenant is None or record.get("tenant") == tenant),
        line=decision_line,
        as_json=lambda record: record,
        markup=False,
    )


decisions_app.command("tail")(
    tail_command(
        "decisions",
        _view,
        noun="record",
        plural="decisions",
        json_help="One JSON object per record (as the worker wrote it).",
        doc="Print decisions as the stream worker writes them (Ctrl-C to stop).",
    )
)


def _decode(value: bytes | None, headers: Any) -> Any:
    try:
        return json.loads(value or b"")
    except ValueError:
        raise Undecodable("not a decision record") from None
