"""``costplane demo`` (what `make demo` runs) goes end to end on the real stack and reports exact totals."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse]


def test_demo_publishes_reads_back_and_attributes_every_event(dev_stack: dict[str, Any]) -> None:
    result = CliRunner().invoke(build_app(), ["demo", "--events", "1500", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(r["events"] for r in rows) == 1500
    assert {r["tenant"] for r in rows} == {"acme", "globex", "initech"}
    for r in rows:
        assert Decimal(r["cost_usd"]) * 1_000_000_000 == r["cost_nanos"]
    retry_share = {t: sum(r["retries"] for r in rows if r["tenant"] == t) /
                   sum(r["events"] for r in rows if r["tenant"] == t) for t in ("acme", "globex")}
    assert retry_share["globex"] > retry_share["acme"]  # the synthetic retry storm shows
