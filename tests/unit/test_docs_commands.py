"""Every ``costplane …`` command quoted in README.md and docs/ exists, with every ``--flag`` quoted beside it.

The commands come from fenced code blocks and inline code spans. Each is resolved against the real command tree
and its ``--help`` is run (offline: help never connects anywhere); a flag counts only when that command's help
lists it as an option, so renaming or hiding a flag fails here until the docs say the same. Failures name the
document and the line the command is quoted on.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from costplane.cli.main import build_app

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_ENV_PREFIX = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+")
_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)")
#: An option row of a help screen: rich's box (``│``) or click's indent, ``*`` when required, then the names.
_HELP_OPTION_ROW = re.compile(r"^(?:│ |  )(?:\* +| {0,3})(-[-\w]+(?:[ ,]+-[-\w]+)*)")
_OPENERS, _CLOSERS = "[({", "])}"


# -- where commands are quoted ---------------------------------------------------------------------------------


def code_snippets(markdown: str) -> Iterator[tuple[int, str]]:
    """(1-based line, text) of every fenced code line, continuations joined, and of every inline code span."""
    lines = markdown.splitlines()
    prose: list[tuple[int, str]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, start=1):
        opened = _FENCE.match(line)
        if fence is None:
            if opened:
                fence = opened.group(1)
                yield from _spans(prose)
                prose = []
            else:
                prose.append((number, line))
            continue
        if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
            fence = None
            continue
        start, text = pending if pending else (number, "")
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        yield start, text
    yield from _spans(prose)


def _spans(prose: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Inline code spans of consecutive prose lines; a blank line ends a paragraph, and with it any span."""
    paragraph: list[tuple[int, str]] = []
    for number, line in [*prose, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            text = "\n".join(part for _, part in paragraph)
            for match in _SPAN.finditer(text):
                yield paragraph[0][0] + text.count("\n", 0, match.start()), " ".join(match.group(2).split())
        paragraph = []


def split_commands(text: str) -> list[str]:
    """The commands of a shell line: split at ``&&``, ``||``, ``;`` and a pipe ``|`` outside brackets.

    ``a|b`` (no spaces) is an alternation and a pipe followed by an option (``--x N | --y M``, as tables write
    either-or choices) is too; neither splits. A ``#`` after a space starts a comment.
    """
    text = re.sub(r"(^|\s)#.*$", "", text.replace("\\|", "|"))
    commands, current, depth, i = [], "", 0, 0
    while i < len(text):
        char = text[i]
        depth += (char in _OPENERS) - (char in _CLOSERS)
        two = text[i : i + 2]
        if depth <= 0 and two in ("&&", "||"):
            commands.append(current)
            current, i = "", i + 2
            continue
        pipe = char == "|" and text[i - 1 : i].isspace() and not text[i + 1 :].lstrip().startswith("-")
        if depth <= 0 and (char == ";" or pipe):
            commands.append(current)
            current, i = "", i + 1
            continue
        current += char
        i += 1
    return [c.strip() for c in [*commands, current] if c.strip()]


def costplane_words(command: str) -> list[str] | None:
    """The words after ``costplane`` when the command runs costplane (after a ``$`` prompt and ``VAR=x``)."""
    command = _ENV_PREFIX.sub("", command.removeprefix("$ ").strip())
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    runs_costplane = bool(words) and (words[0] == "costplane" or words[0].endswith("bin/costplane"))
    if not runs_costplane or len(words) < 2:  # a bare `costplane` names the product, not a command
        return None
    return words[1:]


@dataclass(frozen=True)
class Quoted:
    """A costplane command as a document quotes it."""

    doc: str
    line: int
    text: str
    words: tuple[str, ...]

    @property
    def flags(self) -> list[str]:
        found = _FLAG.findall(self.text)
        return [f for f in dict.fromkeys(found) if f != "--help"]

    def where(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


_SUBCOMMAND = re.compile(r"[a-z][a-z-]*(?:[|/][a-z][a-z-]*)*")


def family_words(command: str) -> list[str] | None:
    """The words of a command quoted without ``costplane`` — a command group and a subcommand (``budget list
    [--format json]``, as a table lists the rest of a family) — or None."""
    words = command.split()
    if len(words) < 2 or words[0] not in _groups() or not _SUBCOMMAND.fullmatch(words[1]):
        return None
    return words


def quoted_commands(path: Path) -> list[Quoted]:
    """Every costplane command quoted in one markdown file."""
    found = []
    for line, snippet in code_snippets(path.read_text(encoding="utf-8")):
        for command in split_commands(snippet):
            words = costplane_words(command)
            if words is None:
                words = family_words(command)
            if words is not None:
                found.append(Quoted(str(path.relative_to(ROOT)), line, command, tuple(words)))
    return found


# -- what the quoted command means ---------------------------------------------------------------------------


def _is_placeholder(word: str) -> bool:
    return word[:1].isupper() or word[:1] in "<{…" or word.startswith("...")


@dataclass
class Resolved:
    """The command paths a quoted command names (several for ``a|b`` or a placeholder), or why it names none."""

    paths: list[tuple[str, ...]] = field(default_factory=list)
    error: str | None = None


def resolve(root: Any, words: tuple[str, ...]) -> Resolved:
    """Walk the subcommand words: stop at the first option, argument or placeholder; expand ``a|b`` and ``a/b``.

    A placeholder where a subcommand belongs (``report NAME``) stands for any of them.
    """
    command, path = root, ()
    for word in words:
        subcommands = _subcommands(command)
        if not subcommands or word[:1] in "-[(>" or word[:1].isdigit():
            break
        if _is_placeholder(word):
            return Resolved([(*path, name) for name in subcommands])
        names = re.split(r"[|/]", word)
        unknown = [n for n in names if n not in subcommands]
        if unknown:
            full = " ".join(("costplane", *path, unknown[0]))
            return Resolved(error=f"no command `{full}` (choose from {', '.join(subcommands)})")
        if len(names) > 1:
            return Resolved([(*path, n) for n in names])
        command, path = subcommands[word], (*path, word)
    return Resolved([path])


def _subcommands(command: Any) -> dict[str, Any]:
    if not hasattr(command, "list_commands"):
        return {}
    ctx = typer.Context(command)
    return {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}


def help_options(help_text: str) -> set[str]:
    """The options a ``--help`` screen lists (its option rows, not flags its prose mentions)."""
    found: set[str] = set()
    for line in help_text.splitlines():
        row = _HELP_OPTION_ROW.match(line)
        if row:
            found.update(f.strip(",") for f in row.group(1).split())
    return found


@cache
def _root() -> Any:
    return typer.main.get_command(build_app())


@cache
def _groups() -> frozenset[str]:
    """The top-level commands that have subcommands of their own."""
    return frozenset(name for name, command in _subcommands(_root()).items() if _subcommands(command))


@cache
def help_of(path: tuple[str, ...]) -> tuple[int, str]:
    """Exit status and output of ``costplane PATH --help``."""
    result = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    return result.exit_code, result.output


def problems(quoted: Quoted) -> list[str]:
    """What is wrong with one quoted command: an unknown command, a failing --help, or flags it does not take."""
    resolved = resolve(_root(), quoted.words)
    if resolved.error:
        return [f"{quoted.where()}: {resolved.error}"]
    offered: set[str] = set()
    found: list[str] = []
    for path in resolved.paths:
        status, output = help_of(path)
        if status != 0 or "Usage: costplane" not in output:
            found.append(f"{quoted.where()}: `costplane {' '.join(path)} --help` exited {status}")
        offered |= help_options(output)
    missing = [f for f in quoted.flags if f not in offered]
    if missing:
        names = " | ".join(" ".join(p) for p in resolved.paths)
        found.append(
            f"{quoted.where()}: `costplane {names}` has no {', '.join(missing)} (its options: "
            f"{', '.join(sorted(offered - {'--help'}))})"
        )
    return found


# -- the tests -------------------------------------------------------------------------------------------------


def test_docs_quote_costplane_commands() -> None:
    """The extraction finds the commands (an empty list would make the next test pass vacuously)."""
    quoted = [q for doc in DOCS for q in quoted_commands(doc)]
    assert len(quoted) > 100
    assert {q.doc for q in quoted} >= {"README.md", "docs/reports.md", "docs/operations.md"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_quoted_command_and_flag_exists(doc: Path) -> None:
    found = [p for q in quoted_commands(doc) for p in problems(q)]
    assert not found, "documented commands that the CLI does not have:\n" + "\n".join(found)


# -- the extraction itself -------------------------------------------------------------------------------------


def test_fenced_lines_join_continuations_and_inline_spans_keep_their_line() -> None:
    markdown = "\n".join(
        [
            "Run `costplane dev up --json`, then",  # 1
            "```bash",  # 2
            "$ COSTPLANE_X=1 costplane report spend \\",  # 3
            "    --by team  # a comment",  # 4
            "```",  # 5
            "a span that `costplane alerts",  # 6
            "tail --json` wraps",  # 7
        ]
    )
    assert list(code_snippets(markdown)) == [
        (1, "costplane dev up --json"),
        (3, "$ COSTPLANE_X=1 costplane report spend      --by team  # a comment"),
        (6, "costplane alerts tail --json"),
    ]


def test_commands_split_at_pipes_and_lists_but_not_at_alternations() -> None:
    assert split_commands("costplane dev down && rm -rf x") == ["costplane dev down", "rm -rf x"]
    assert split_commands("costplane report spend --format json | jq .") == [
        "costplane report spend --format json",
        "jq .",
    ]
    assert split_commands("costplane worker [--role stream|sink|all]") == ["costplane worker [--role stream|sink|all]"]
    assert split_commands("costplane rerate (--catalog F | --price-version V)") == [
        "costplane rerate (--catalog F | --price-version V)"
    ]
    assert split_commands(r"costplane forecast scenario --sessions N \| --requests N") == [
        "costplane forecast scenario --sessions N | --requests N"
    ]


def test_words_skip_prompts_variables_and_paths() -> None:
    assert costplane_words("$ COSTPLANE_A=1 B=x costplane dev up") == ["dev", "up"]
    assert costplane_words(".venv/bin/costplane --help") == ["--help"]
    assert costplane_words("pip install costplane") is None
    assert costplane_words("costplane") is None
    assert costplane_words("~/.cache/costplane") is None
    assert family_words("budget list [--format json]") == ["budget", "list", "[--format", "json]"]
    assert family_words("budget_id = 3") is None
    assert family_words("worker --role stream") is None  # not a group: prose names it, `costplane worker` runs it


def _quote(doc: str, line: int, text: str) -> Quoted:
    return Quoted(doc, line, text, tuple(costplane_words(text) or ()))


def test_resolution_names_the_unknown_command_and_the_missing_flag() -> None:
    bad = problems(_quote("docs/x.md", 7, "costplane report spend --by team --bogus"))
    assert len(bad) == 1
    assert bad[0].startswith(
        "docs/x.md:7: `costplane report spend --by team --bogus`: `costplane report spend` has no --bogus"
    )
    missing = problems(_quote("README.md", 3, "costplane nosuch thing"))
    assert missing[0].startswith("README.md:3: `costplane nosuch thing`: no command `costplane nosuch`")
    assert resolve(_root(), ("db", "migrate|status")).paths == [("db", "migrate"), ("db", "status")]
    assert ("report", "spend") in resolve(_root(), ("report", "NAME", "--by", "x")).paths


def test_a_hidden_option_is_not_documented_for_that_report() -> None:
    # --allocate exists on every report command but only chargeback shows it.
    assert problems(_quote("d.md", 1, "costplane report chargeback --allocate proportional")) == []
    assert "has no --allocate" in problems(_quote("d.md", 1, "costplane report spend --allocate proportional"))[0]
