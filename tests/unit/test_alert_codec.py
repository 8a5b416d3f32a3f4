"""The alerts topic's Avro codec and alert.avsc: every field documented, round trips exact, bad bytes refused."""

from __future__ import annotations

import pytest

from costplane.streams.alerting.codec import AlertDecodeError, alert_schema, decode_alert, encode_alert
from costplane.streams.alerting.model import AlertEvent, alert_from_json_dict, alert_to_json_dict
from costplane.streams.core.findings import Contributor

EVENT = AlertEvent(
    alert_id="0b9c6a0e-7d3c-5d52-9d8e-4f0f7b1d2a33",
    dedup_key="retry_storm:acme:chat",
    kind="retry_storm",
    action="trigger",
    severity="critical",
    tenant="acme",
    summary="retry ratio 18%",
    window_start_ms=1_790_000_000_000,
    window_end_ms=1_790_000_060_000,
    occurred_at_ms=1_790_000_061_234,
    subject={"feature": "chat"},
    numbers={"retry_ratio": "0.18", "wasted_usd": "12.345678901"},
    contributors=(Contributor("user_id", "u-17", 12_345_678_901, 9_000, 40), Contributor("model", "gpt-4o")),
    suggested_action="Back off.",
    runbook="docs/runbook.md#retry-storm",
    escalated=True,
)


def test_every_field_is_documented() -> None:
    schema = alert_schema()
    assert schema["doc"]
    assert [f["name"] for f in schema["fields"] if not f.get("doc")] == []
    contributor = next(f for f in schema["fields"] if f["name"] == "contributors")["type"]["items"]
    assert [f["name"] for f in contributor["fields"] if not f.get("doc")] == []


def test_round_trip_is_exact_and_headers_name_the_schema() -> None:
    value, headers = encode_alert(EVENT)
    assert dict(headers) == {"costplane-schema": b"Alert", "costplane-schema-version": b"1"}
    assert decode_alert(value, headers) == EVENT
    assert alert_from_json_dict(alert_to_json_dict(EVENT)) == EVENT


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [
        (b"", None, "empty"),
        (b"\x02", None, "undecodable"),
        (None, None, "empty"),
        (b"x", [("costplane-schema", b"UsageBatch")], "not an Alert"),
        (b"x", [("costplane-schema", b"Alert"), ("costplane-schema-version", b"9")], "version 9"),
    ],
)
def test_bad_messages_raise_a_readable_error(
    value: bytes | None, headers: list[tuple[str, bytes]] | None, message: str
) -> None:
    with pytest.raises(AlertDecodeError, match=message):
        decode_alert(value, headers)


def test_trailing_bytes_are_refused() -> None:
    value, headers = encode_alert(EVENT)
    with pytest.raises(AlertDecodeError, match="trailing"):
        decode_alert(value + b"\x00", headers)


def test_alert_schema_reads_every_released_version() -> None:
    import copy
    import json
    from importlib import resources
    from pathlib import Path

    from costplane.publisher.schema_compat import backward_problems

    history = Path(str(resources.files("costplane.schemas"))) / "history"
    released = sorted(p / "alert.avsc" for p in history.iterdir() if (p / "alert.avsc").exists())
    assert released, "schemas/history/v1/alert.avsc is the first released alert schema"
    for path in released:
        assert backward_problems([json.loads(path.read_text())], [alert_schema()]) == [], path
    breaking = copy.deepcopy(alert_schema())
    breaking["fields"].append({"name": "owner", "type": "string", "doc": "required, no default"})
    assert backward_problems([alert_schema()], [breaking], samples=50) != []
