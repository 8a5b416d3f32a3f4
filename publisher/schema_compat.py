"""Backward-compatibility check for the Avro contracts: data written with any released schema must stay readable.

Used by the test suite against ``schemas/history/v*/`` so a schema change that would strand old messages (a new
field without a default, a changed type, a removed enum symbol) fails before it ships.

Two independent checks, both must pass:

* **structural** — the Avro specification's resolution rules applied to the two schemas (records match by name,
  reader-only fields need defaults, promotions int→long→float→double and string↔bytes, enum symbols, unions,
  arrays, maps, fixed sizes, logical types unchanged). Deterministic: it catches a rule broken by a rarely
  produced value too (an enum symbol in an optional field).
* **empirical** — random records written with the old schema and read through the new one with fastavro, the
  library that actually decodes them in production.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import fastavro
from fastavro.utils import generate_many

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def _parse(schema: dict[str, Any], named: dict[str, Any]) -> Any:
    return fastavro.parse_schema(json.loads(json.dumps(schema)), named_schemas=named)


def backward_problems(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]], *, samples: int = 200) -> list[str]:
    """Problems reading data written with ``old`` schemas through ``new`` ones (empty list = compatible).

    ``old`` and ``new`` are lists of schemas in dependency order (e.g. [UsageEvent, UsageBatch]); the last one is
    the record written and read.
    """
    old, new = list(old), list(new)
    problems = structural_problems(old, new)
    old_named: dict[str, Any] = {}
    new_named: dict[str, Any] = {}
    writer = [_parse(s, old_named) for s in old][-1]
    reader = [_parse(s, new_named) for s in new][-1]
    for record in generate_many(writer, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # noqa: BLE001 - every resolution failure is a reported incompatibility
            problems.append(f"fastavro: {type(exc).__name__}: {exc}")
            break
    return problems


def structural_problems(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """The Avro resolution rules applied to writer ``old[-1]`` and reader ``new[-1]`` (named types from all)."""
    old_named: dict[str, Any] = {}
    new_named: dict[str, Any] = {}
    for schema in old:
        _collect(schema, "", old_named)
    for schema in new:
        _collect(schema, "", new_named)
    return _Resolver(old_named, new_named).check(old[-1], new[-1], "$")


def _collect(schema: Any, namespace: str, named: dict[str, Any]) -> None:
    """Index every named type (record, enum, fixed) by full and short name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, named)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = str(schema["name"])
        space = str(schema.get("namespace", namespace)) if "." not in name else name.rsplit(".", 1)[0]
        short = name.rsplit(".", 1)[-1]
        named[f"{space}.{short}" if space else short] = schema
        named.setdefault(short, schema)
        for field in schema.get("fields", ()):
            _collect(field["type"], space, named)
    elif kind in ("array", "map"):
        _collect(schema.get("items", schema.get("values")), namespace, named)
    elif isinstance(kind, (dict, list)):
        _collect(kind, namespace, named)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Resolver:
    def __init__(self, writer_named: dict[str, Any], reader_named: dict[str, Any]) -> None:
        self._wn = writer_named
        self._rn = reader_named
        self._seen: set[tuple[str, str]] = set()

    @staticmethod
    def _deref(schema: Any, named: dict[str, Any]) -> Any:
        """A named type's definition in place of its name (``"dev.costplane.v1.UsageEvent"`` → the record)."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return named.get(schema, named.get(_short(schema), schema))
        return schema

    def check(self, writer: Any, reader: Any, path: str) -> list[str]:
        """Why data written with ``writer`` cannot be read as ``reader`` at ``path`` (empty: it can)."""
        writer, reader = self._deref(writer, self._wn), self._deref(reader, self._rn)
        for side, schema in (("writer", writer), ("reader", reader)):
            if isinstance(schema, str) and schema not in _PRIMITIVES:
                return [f"{path}: {side} refers to undefined type {schema} (renamed or removed?)"]
        if isinstance(writer, list) or isinstance(reader, list):
            return self._union(writer, reader, path)
        wk, rk = _kind(writer), _kind(reader)
        if wk in _PRIMITIVES or rk in _PRIMITIVES:
            return _primitive(writer, reader, path)
        if wk != rk:
            return [f"{path}: writer {wk} cannot be read as {rk}"]
        if wk in ("record", "error", "enum", "fixed") and not _same_name(writer, reader):
            return [f"{path}: writer {wk} {writer.get('name')} is not reader {rk} {reader.get('name')}"]
        if wk == "array":
            return self.check(writer["items"], reader["items"], f"{path}[]")
        if wk == "map":
            return self.check(writer["values"], reader["values"], f"{path}{{}}")
        if wk == "fixed":
            return [] if writer.get("size") == reader.get("size") else [f"{path}: fixed size changed"]
        if wk == "enum":
            return _enum(writer, reader, path)
        return self._record(writer, reader, path)

    def _union(self, writer: Any, reader: Any, path: str) -> list[str]:
        """A writer union: every branch must be readable; a reader union: some branch must read the writer."""
        if isinstance(writer, list):
            problems: list[str] = []
            for i, branch in enumerate(writer):
                problems += self.check(branch, reader, f"{path}<{_kind(branch)}#{i}>")
            return problems
        if any(not self._quiet(writer, branch) for branch in reader):
            return []
        return [
            f"{path}: writer type {_kind(writer)} matches no branch of the reader union {[_kind(b) for b in reader]}"
        ]

    def _record(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[str]:
        key = (str(writer["name"]), str(reader["name"]))
        if key in self._seen:  # recursive types: already being checked further up
            return []
        self._seen.add(key)
        problems: list[str] = []
        writer_fields = {f["name"]: f for f in writer.get("fields", ())}
        for field in reader.get("fields", ()):
            names = [field["name"], *field.get("aliases", ())]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            if match is None:
                if "default" not in field:
                    problems.append(f"{path}.{field['name']}: new field without a default (old data lacks it)")
                continue
            problems += self.check(match["type"], field["type"], f"{path}.{field['name']}")
        self._seen.discard(key)
        return problems

    def _quiet(self, writer: Any, reader: Any) -> bool:
        """Whether ``writer`` resolves against ``reader`` without problems (for union branch selection)."""
        return not self.check(writer, reader, "")


def _primitive(writer: Any, reader: Any, path: str) -> list[str]:
    """A primitive on either side: the same type or an Avro promotion, and the same logical type."""
    wk, rk = _kind(writer), _kind(reader)
    if wk != rk and rk not in _PROMOTIONS.get(wk, frozenset()):
        return [f"{path}: writer {wk} cannot be read as {rk}"]
    if _logical(writer) != _logical(reader):
        return [f"{path}: logical type changed from {_logical(writer)} to {_logical(reader)}"]
    return []


def _enum(writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[str]:
    """Symbols the writer may send that the reader lacks are fine only with a reader default."""
    missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
    if missing and "default" not in reader:
        return [f"{path}: enum {reader['name']} lost symbol(s) {missing} and has no default"]
    return []


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    return _kind(kind) if isinstance(kind, (dict, list)) else str(kind)


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _same_name(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    names = {_short(str(reader["name"])), *(_short(a) for a in reader.get("aliases", ()))}
    return _short(str(writer["name"])) in names
