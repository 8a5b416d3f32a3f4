"""Schema evolution is backward compatible only: today's schemas read data written with every released version."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from costplane.publisher.schema_compat import backward_problems

SCHEMAS = Path(str(resources.files("costplane.schemas")))
HISTORY = sorted(p for p in (SCHEMAS / "history").iterdir() if p.is_dir())


def _pair(folder: Path) -> list[dict[str, Any]]:
    return [json.loads((folder / f"{n}.avsc").read_text()) for n in ("usage_event", "usage_batch")]


def test_history_exists() -> None:
    assert [p.name for p in HISTORY][:1] == ["v1"]


@pytest.mark.parametrize("version", HISTORY, ids=lambda p: p.name)
def test_current_schemas_read_every_released_version(version: Path) -> None:
    old, new = _pair(version), _pair(SCHEMAS)
    assert backward_problems(old[:1], new[:1]) == []
    assert backward_problems(old, new) == []


def test_every_field_is_documented() -> None:
    for schema in _pair(SCHEMAS):
        assert schema.get("doc")
        assert all(f.get("doc") for f in schema["fields"]), [f["name"] for f in schema["fields"] if not f.get("doc")]


def test_adding_an_optional_field_with_a_default_is_compatible() -> None:
    event = _pair(SCHEMAS)[0]
    evolved = copy.deepcopy(event)
    evolved["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "x"})
    assert backward_problems([event], [evolved]) == []


@pytest.mark.parametrize(
    "breaking",
    [
        lambda s: s["fields"].append({"name": "region", "type": "string", "doc": "required, no default"}),
        lambda s: next(f for f in s["fields"] if f["name"] == "input_tokens").update(type="string"),
        lambda s: next(f for f in s["fields"] if f["name"] == "status")["type"].update(symbols=["ok", "error"]),
    ],
    ids=["required-field-without-default", "type-change", "enum-symbol-removed"],
)
def test_the_checker_catches_breaking_changes(breaking: Any) -> None:
    event = _pair(SCHEMAS)[0]
    evolved = copy.deepcopy(event)
    breaking(evolved)
    assert backward_problems([event], [evolved], samples=500) != []
