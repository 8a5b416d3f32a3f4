"""The suggested actions of detector findings name CLI commands that exist (an alert that sends on-call to a
command the CLI does not have costs minutes in an incident)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.streams.detectors import forecast, price_mismatch, unpriced, user_share

ACTIONS = [unpriced.ACTION, price_mismatch.ACTION, forecast.ACTION, user_share.ACTION]
COMMAND = re.compile(r"costplane ((?:[a-z]+)(?: [a-z]+)?)")


@pytest.mark.parametrize("action", ACTIONS)
def test_each_command_an_action_names_has_help(action: str) -> None:
    commands = COMMAND.findall(action)
    assert commands, action
    for command in commands:
        words = command.split()
        result = CliRunner().invoke(build_app(), [*words, "--help"])
        if result.exit_code != 0:  # a second word that is an argument, not a subcommand (`prices show MODEL`)
            result = CliRunner().invoke(build_app(), [words[0], "--help"])
        assert result.exit_code == 0, f"{command!r} in {action!r}: {result.output[-300:]}"
        assert "No such command" not in result.output


def test_the_unpriced_model_action_names_the_prices_command() -> None:
    assert "costplane prices import" in unpriced.ACTION and "costplane pricing" not in unpriced.ACTION
