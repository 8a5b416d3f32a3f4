"""Budgets that cannot be enforced are refused, with one clear line and exit 2 from the CLI (never a traceback).

Each case here was accepted before (or raised a traceback): a limit the counters cannot hold (``1e400`` became a
``-inf`` counter), ``NaN``/``Infinity``, a limit finer than a nano-USD stored as $0, repeated scope keys, a 10 KB
tenant, ``degrade:`` to a model nobody prices, thresholds that are not numbers.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from costplane.budgets import Budget, BudgetError, budgets_from_yaml
from costplane.budgets.model import MAX_LIMIT
from costplane.cli.main import build_app

runner = CliRunner()


def set_budget(*flags: str) -> tuple[int, str, BaseException | None]:
    result = runner.invoke(build_app(), ["budget", "set", "b1", *flags])
    return result.exit_code, result.stderr, result.exception


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit-usd", "NaN"], "finite"),
        (["--limit-usd", "Infinity"], "finite"),
        (["--limit-usd", "-Infinity"], "finite"),
        (["--limit-usd", "1e400"], "at most $1,000,000"),
        (["--limit-usd", "1e11"], "at most $1,000,000"),
        (["--limit-usd", "0"], "more than 0"),
        (["--limit-usd", "-5"], "more than 0"),
        (["--limit-usd", "1e-10"], "finer than a nano-USD"),
        (["--limit-usd", "abc"], "not a number"),
        (["--limit-tokens", "1000000000000001"], "10^15 tokens"),
        (["--limit-tokens", "0"], "more than 0"),
        (["--limit-usd", "5", "--soft", "abc"], "--soft"),
        (["--limit-usd", "5", "--soft", "nan"], "fractions"),
        (["--limit-usd", "5", "--soft", "0.5,0.5"], "differ"),
        (["--limit-usd", "5", "--action", "degrade:no-such-model-xyz"], "does not price"),
        (["--limit-usd", "5", "--action", "explode"], "must be block"),
        (["--limit-usd", "5", "--tz", "x" * 5000], "timezone"),
    ],
)
def test_cli_refuses_in_one_line(flags: list[str], message: str) -> None:
    code, err, exc = set_budget("--scope", "tenant=acme", *flags)
    assert code == 2, err
    assert isinstance(exc, SystemExit)  # no exception other than the exit itself
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("tenant=acme,tenant=evil", "twice"),
        ("tenant=acme,user=a,user=b", "twice"),
        ("tenant=" + "a" * 10_000, "1-128 characters"),
        ("tenant=a}b", "1-128 characters"),
        ("tenant=acme,team=" + "t" * 600, "at most 512"),
        ("tenant=acme,colour=red", "unknown scope dimension"),
        ("team=a", "must name its tenant"),
    ],
)
def test_cli_refuses_bad_scopes(scope: str, message: str) -> None:
    code, err, exc = set_budget("--scope", scope, "--limit-usd", "5")
    assert code == 2 and isinstance(exc, SystemExit)
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_bound_is_exact_in_the_guards_arithmetic() -> None:
    # The scripts sum in IEEE doubles, exact for integers up to 2^53: the bound leaves room for a window's
    # spend to exceed the limit eight times over and still be counted exactly.
    assert MAX_LIMIT * 9 < 2**53
    assert float(MAX_LIMIT * 9 + 1) != float(MAX_LIMIT * 9)
    top = Budget.from_cli("top", scope="tenant=acme", limit_usd="1000000")
    assert top.limit == MAX_LIMIT
    assert Budget.from_cli("tiny", scope="tenant=acme", limit_usd="0.000000001").limit == 1
    assert Budget.from_cli("tok", scope="tenant=acme", limit_tokens=MAX_LIMIT).limit == MAX_LIMIT


def test_stored_budgets_are_held_to_the_same_rules() -> None:
    """A budget written before the rules (straight JSON) no longer loads: the guard and worker skip it."""
    good = Budget.from_cli("b", scope="tenant=acme", limit_tokens=10)
    for limit in (0, -1, MAX_LIMIT + 1, 10**30):
        with pytest.raises(ValueError, match="limit must be more than 0"):
            Budget.from_json(good.to_json().replace('"limit": 10', f'"limit": {limit}'))
    with pytest.raises(ValueError, match="1-128 characters"):
        Budget.model_validate({**good.model_dump(), "scope": {"tenant": "x}y"}})


def test_yaml_refusals() -> None:
    for text, message in [
        ("- {id: a, scope: 'tenant=acme', limit_tokens: 1e30}", "whole number"),
        ("- {id: a, scope: 'tenant=acme', limit_usd: .nan}", "finite"),
        ("- {id: a, scope: {tenant: acme, team: 'x,y'}, limit_usd: 1}", "twice|dimension=value"),
        ("- {id: a, scope: 5, limit_usd: 1}", "scope is text"),
    ]:
        with pytest.raises(BudgetError, match=message):
            budgets_from_yaml(text)


def test_scope_values_with_separators_keep_their_meaning() -> None:
    """A mapping scope may hold any value an event may carry; members escape it (publisher/identifiers.py)."""
    budget = Budget.model_validate(
        {"id": "b", "scope": {"tenant": "acme", "team": "a,user=b"}, "unit": "tokens", "limit": 10}
    )
    assert budget.member_of({"tenant": "acme", "team": "a,user=b"}) == "tenant=acme,team=a%2Cuser%3Db"
    assert budget.member_of({"tenant": "acme", "team": "a"}) is None
