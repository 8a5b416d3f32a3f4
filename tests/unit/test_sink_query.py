"""Report specs: dimension whitelist, time parsing, SQL shape, the query-string round trip, exact USD."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from costplane.streams.sink.query import ReportError, ReportSpec, build_sql, format_usd, parse_time


def test_unknown_or_repeated_dimensions_are_refused() -> None:
    with pytest.raises(ReportError, match="among"):
        ReportSpec.parse("tenant,cost; DROP TABLE x")
    with pytest.raises(ReportError):
        ReportSpec.parse("")
    with pytest.raises(ReportError, match="twice"):
        ReportSpec.parse("model,model")


def test_times_are_utc_iso_or_epoch_millis() -> None:
    assert parse_time("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_time("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time("2026-01-31T13:00:00+01:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time("1767225600000") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ReportError):
        parse_time("yesterday")


def test_sql_binds_values_and_splices_only_whitelisted_expressions() -> None:
    spec = ReportSpec.parse("tenant,day", since="2026-01-01", tenant="x' OR 1=1 --")
    sql, params = build_sql(spec, "cp")
    assert "FROM cp.usage_events" in sql
    assert "toDate(occurred_at) AS day" in sql
    assert "GROUP BY tenant, day" in sql
    assert "x' OR" not in sql and params["tenant"] == "x' OR 1=1 --"
    assert "{since:DateTime64(3, 'UTC')}" in sql and "until" not in params


def test_query_string_round_trip() -> None:
    spec = ReportSpec.parse("model,hour", since="2026-01-01T00:00Z", until="2026-02-01", tenant="acme & co")
    assert ReportSpec.from_query_string(spec.to_query_string()) == spec


def test_usd_is_exact_decimal_text() -> None:
    assert format_usd(0) == "0.000000000"
    assert format_usd(1) == "0.000000001"
    assert format_usd(123_456_789_012_345_678) == "123456789.012345678"
    assert format_usd(-5) == "-0.000000005"
