"""Backward-compatibility check for the Avro contracts: data written with any released schema must stay readable.

Used by the test suite against ``schemas/history/v*/`` so a schema change that would strand old messages (a new
field without a default, a changed type, a removed enum symbol) fails before it ships.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import fastavro
from fastavro.utils import generate_many


def _parse(schema: dict[str, Any], named: dict[str, Any]) -> Any:
    return fastavro.parse_schema(json.loads(json.dumps(schema)), named_schemas=named)


def backward_problems(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]], *, samples: int = 200) -> list[str]:
    """Problems reading data written with ``old`` schemas through ``new`` ones (empty list = compatible).

    ``old`` and ``new`` are lists of schemas in dependency order (e.g. [UsageEvent, UsageBatch]); the last one is
    the record written and read.
    """
    old_named: dict[str, Any] = {}
    new_named: dict[str, Any] = {}
    writer = [_parse(s, old_named) for s in old][-1]
    reader = [_parse(s, new_named) for s in new][-1]
    problems: list[str] = []
    for record in generate_many(writer, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # noqa: BLE001 - every resolution failure is a reported incompatibility
            problems.append(f"{type(exc).__name__}: {exc}")
            break
    return problems
