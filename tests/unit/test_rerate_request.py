"""``costplane rerate``'s pure half: the range widened to whole UTC days, the request's trip to the worker, and
one raw row priced again exactly as the worker prices an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from costplane.pricing.catalog import load_catalog
from costplane.streams.sink.rerate import RerateError, RerateRequest, rate

NOW = datetime(2026, 12, 5, 7, 30, tzinfo=UTC)


def test_range_is_widened_to_whole_utc_days() -> None:
    r = RerateRequest.build(
        datetime(2026, 11, 3, 17, 45, tzinfo=UTC), datetime(2026, 11, 9, 0, 1, tzinfo=UTC), now=NOW, catalog="/c.json"
    )
    assert (r.since, r.until) == (datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC))
    exact = RerateRequest.build(
        datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC), now=NOW, price_version="v2"
    )
    assert exact.until == datetime(2026, 11, 9, tzinfo=UTC)  # already a day boundary: kept
    through_today = RerateRequest.build(datetime(2026, 11, 3, tzinfo=UTC), None, now=NOW, price_version="v2")
    assert through_today.until == datetime(2026, 12, 6, tzinfo=UTC)


def test_query_string_round_trip() -> None:
    r = RerateRequest.build(
        datetime(2026, 11, 3, tzinfo=UTC),
        None,
        now=NOW,
        tenant="acme & co",
        catalog="/tmp/new prices.json",
        dry_run=True,
    )
    assert RerateRequest.from_query_string(r.to_query_string()) == r


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --catalog FILE or --price-version V"),
        ({"catalog": "/c.json", "price_version": "v2"}, "exactly one of"),
        ({"catalog": "/c.json", "until": datetime(2026, 11, 1, tzinfo=UTC)}, "must be before"),
        ({"catalog": "/c.json", "tenant": " "}, "--tenant must not be empty"),
    ],
)
def test_bad_requests(kwargs: dict[str, object], message: str) -> None:
    until = kwargs.pop("until", None)
    with pytest.raises(RerateError, match=message):
        RerateRequest.build(datetime(2026, 11, 3, tzinfo=UTC), until, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_rate_prices_a_row_like_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "format": "costplane-price-catalog",
                "format_version": 1,
                "versions": [
                    {
                        "price_version": "v2",
                        "effective_from": "2020-01-01",
                        "models": {
                            "alpha": {
                                "provider": "acme-ai",
                                "input_cost_per_token": "0.000003",
                                "cache_read_input_token_cost": "0.0000015",
                                "output_cost_per_token": "0.000005",
                            }
                        },
                    }
                ],
            }
        )
    )
    catalog = load_catalog(path)
    at = datetime(2026, 11, 3, 12, 0)  # read back from ClickHouse: naive means UTC
    row = ("e1", "acme", "acme-ai", "alpha", at, 1000, 200, 0, 100, 0, None, None, None)
    # 1000 × 3000 + 200 × 1500 + 100 × 5000 nano-USD; prompt side 3 300 000; cache saved 200 × 1500
    assert rate(catalog, row) == (3_800_000, "v2", False, 3_300_000, 300_000, 0, 0, 0, 0, 0)
    hit = (*row[:-1], True)  # an app-side result-cache hit costs nothing; the ledger says what it avoided
    assert rate(catalog, hit) == (0, "v2", False, 0, 0, 0, 0, 0, 0, 3_800_000)
    unknown = ("e2", "acme", "acme-ai", "gamma", at, 10, 0, 0, 0, 0, None, None, None)
    assert rate(catalog, unknown) == (0, "v2", True, 0, 0, 0, 0, 0, 0, 0)
