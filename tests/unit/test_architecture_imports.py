"""docs/ARCHITECTURE.md's component table says which components each may import; the code must agree.

The table's last column names, per top-level folder, the parts of ``costplane`` its modules import: other
components by name, ``config`` and ``logging`` (the shared settings and logging shells), ``costplane`` for the other
modules of the ``costplane/`` folder, "everything above" for every component of an earlier row, and "everything".
Pure components also never import I/O libraries: that is what keeps their logic testable with plain data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
SHELLS = {"config", "logging"}
IO_LIBRARIES = ("faust", "aiokafka", "confluent_kafka", "redis", "clickhouse_connect", "chdb", "httpx")
PURE = ("budgets", "reports", "streams/detectors", "streams/core")


def _table() -> dict[str, str]:
    """Folder → its "imports from costplane" cell, in the table's order."""
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`[a-z]+/`", cells[0]):
            rows[cells[0].strip("`/")] = cells[3]
    return rows


def _allowed(table: dict[str, str]) -> dict[str, set[str]]:
    components = list(table)
    allowed: dict[str, set[str]] = {}
    for index, (folder, cell) in enumerate(table.items()):
        names = {re.sub(r"\s*\(.*\)", "", part).strip() for part in cell.split(",")}
        grant: set[str] = set()
        for name in names - {"—", ""}:
            if name == "everything":
                grant |= set(components) | SHELLS
            elif name == "everything above":
                grant |= set(components[:index])
            else:
                grant.add(name)
        allowed[folder] = grant
    return allowed


def _imported(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (absolute imports, wherever they stand)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _part(module: str, components: set[str]) -> str | None:
    """Which table entry an imported ``costplane...`` module belongs to (None: not costplane)."""
    parts = module.split(".")
    if parts[0] != "costplane":
        return None
    if len(parts) > 1 and (parts[1] in components or parts[1] in SHELLS):
        return parts[1]
    return "costplane"


def test_the_table_lists_every_component_folder() -> None:
    table = _table()
    mapped = re.findall(r'"costplane\.(\w+)" = "(\w+)"', (ROOT / "pyproject.toml").read_text())
    assert {folder for _name, folder in mapped} <= set(table), "a mapped folder is missing from the table"
    assert "costplane" in table


@pytest.mark.parametrize("folder", sorted(_table()))
def test_a_component_imports_only_what_the_table_allows(folder: str) -> None:
    table = _table()
    allowed = _allowed(table)[folder]
    components = set(table)
    wrong: list[str] = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in _imported(path):
            part = _part(module, components)
            if part is not None and part != folder and part not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, f"docs/ARCHITECTURE.md does not allow {folder}/ these imports:\n" + "\n".join(wrong)


@pytest.mark.parametrize("folder", PURE)
def test_pure_components_import_no_io_library(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in _imported(path)
        if module.split(".")[0] in IO_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)
