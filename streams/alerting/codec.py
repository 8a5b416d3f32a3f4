"""Avro bytes for the alerts topic: schemaless body plus the same naming headers the usage codec uses.

Headers ``costplane-schema: Alert`` and ``costplane-schema-version: 1`` tell a consumer what the body is, so the
alerts topic can be read by any tool that reads the usage topic's framing. Timestamps are read as plain longs
(the binary encoding of timestamp-millis is a long), keeping epoch millis end to end.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, cast

import fastavro

from costplane.streams.alerting.model import AlertEvent, alert_from_json_dict, alert_to_json_dict

SCHEMA_HEADER = "costplane-schema"  # same header names as costplane.publisher.codec
VERSION_HEADER = "costplane-schema-version"
ALERT = "Alert"
SCHEMA_VERSION = b"1"
_TIMESTAMPS = ("window_start", "window_end", "occurred_at")

Headers = list[tuple[str, bytes]]
# What confluent-kafka's Message.headers() may return, accepted as is by decode_alert.
AnyHeaders = Headers | Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


class AlertDecodeError(ValueError):
    """The message is not an Alert this codec can read (wrong header, version or bytes)."""


def alert_schema() -> dict[str, Any]:
    """The shipped ``alert.avsc`` as a dict (timestamp-millis logical types intact)."""
    return cast(dict[str, Any], json.loads(resources.files("costplane.schemas").joinpath("alert.avsc").read_text()))


@cache
def _fast_schema() -> Any:
    plain = copy.deepcopy(alert_schema())
    for f in plain["fields"]:
        if f["name"] in _TIMESTAMPS:
            f["type"] = "long"
    return fastavro.parse_schema(plain)


def encode_alert(event: AlertEvent) -> tuple[bytes, Headers]:
    """Message value and headers for one alert (the caller keys the message by ``event.tenant``)."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _fast_schema(), alert_to_json_dict(event))
    return out.getvalue(), [(SCHEMA_HEADER, ALERT.encode()), (VERSION_HEADER, SCHEMA_VERSION)]


def _header_map(headers: AnyHeaders) -> dict[str, bytes]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return {k: v.encode() if isinstance(v, str) else v for k, v in pairs if v is not None}


def decode_alert(value: bytes | None, headers: AnyHeaders = None) -> AlertEvent:
    """Read one alert message; raises :class:`AlertDecodeError` with a readable reason."""
    found = _header_map(headers)
    name = found.get(SCHEMA_HEADER)
    if name is not None and name != ALERT.encode():
        raise AlertDecodeError(f"message is a {name.decode(errors='replace')!r}, not an Alert")
    version = found.get(VERSION_HEADER, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise AlertDecodeError(f"Alert schema version {version.decode(errors='replace')} is not known")
    if not value:
        raise AlertDecodeError("empty message value")
    buf = io.BytesIO(value)
    try:
        record = cast(dict[str, Any], fastavro.schemaless_reader(buf, _fast_schema(), None))
        if buf.tell() != len(value):
            raise AlertDecodeError(f"{len(value) - buf.tell()} trailing bytes after the Alert record")
        return alert_from_json_dict(record)
    except (EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
        if isinstance(exc, AlertDecodeError):
            raise
        raise AlertDecodeError(f"undecodable Alert: {type(exc).__name__}: {exc}"[:500]) from exc
