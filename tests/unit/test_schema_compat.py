"""Schema evolution is backward compatible only: today's schemas read data written with every released version."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from costplane.publisher.schema_compat import backward_problems, structural_problems

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


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == name)
    return field


@pytest.mark.parametrize(
    ("breaking", "expected"),
    [
        (lambda s: _field(s, "status")["type"]["symbols"].remove("cancelled"), "lost symbol"),
        (lambda s: _field(s, "user_id").update(type="string"), "null cannot be read as string"),
        (lambda s: _field(s, "occurred_at")["type"].update(logicalType="timestamp-micros"), "logical type"),
        (lambda s: _field(s, "input_tokens").update(type="int"), "long cannot be read as int"),
        (lambda s: s.update(name="UsageRecord"), "undefined type dev.costplane.v1.UsageEvent"),
    ],
    ids=["rare-enum-symbol-removed", "optional-made-required", "logical-type-changed", "long-narrowed", "renamed"],
)
def test_structural_check_is_deterministic_inside_the_batch(breaking: Any, expected: str) -> None:
    """Breaks that random samples can miss (a rare symbol) are found by the rules, also nested in UsageBatch."""
    old = _pair(SCHEMAS)
    evolved = copy.deepcopy(old)
    breaking(evolved[0])
    problems = structural_problems(old, evolved)
    assert problems and expected in problems[0] and problems[0].startswith("$.events[]")


def test_structural_check_allows_the_specs_compatible_changes() -> None:
    old = _pair(SCHEMAS)[0]
    new = copy.deepcopy(old)
    _field(new, "attempt").update(type="long")  # int → long promotion
    _field(new, "operation")["type"][1]["symbols"].remove("rerank")  # enum with a default absorbs it
    _field(new, "status")["type"]["symbols"].append("skipped")  # new symbol: old data never has it
    new["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "x"})
    assert structural_problems([old], [new]) == []
    assert structural_problems([new], [old]) != []  # …but not forward: long → int, unknown symbol
