"""Per-tenant thresholds as records of the compacted detectors topic, and plans to change them.

One record per key: ``*`` (the default every tenant starts from) or a tenant id; the value is a JSON object of
:class:`DetectorConfig` fields to override (decimals as strings, ``dimensions`` as a list); a tombstone removes the
record (the tenant goes back to the default, the default back to the built-in numbers). A tenant's thresholds are
the built-in defaults, then the ``*`` record, then its own record, validated as a whole.

Pure: the CLI validates and plans with it before publishing, the worker resolves what it reads with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costplane.publisher.identifiers import tenant_problem
from costplane.streams.detectors.config import DetectorConfig, parse_overrides, replace_config

DEFAULT_KEY = "*"
#: Settings that only the default may carry: the minute clock is one per worker, not one per tenant.
WORKER_WIDE = frozenset({"grace_ms"})

Overrides = dict[str, Any]  # typed values (see parse_overrides)


def check_key(key: str) -> str:
    """A record key: ``*`` or a valid tenant id (the publisher's rule)."""
    problem = None if key == DEFAULT_KEY else tenant_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return key


def parse_record(key: str, values: Mapping[str, Any]) -> Overrides:
    """The typed overrides of one record; a setting only the default may carry is refused for a tenant."""
    check_key(key)
    overrides = parse_overrides(values)
    tenant_only = sorted(WORKER_WIDE & set(overrides)) if key != DEFAULT_KEY else []
    if tenant_only:
        raise ValueError(f"{', '.join(tenant_only)} applies to the whole worker: set it with --tenant '*'")
    return overrides


def decode_record(key: str, value: bytes) -> Overrides:
    """A topic record's value: a JSON object of settings (``ValueError`` with one line when it is not)."""
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object of detector settings")
    return parse_record(key, data)


def to_json_values(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready values: decimals as strings (exact), dimensions as a list."""
    out: dict[str, Any] = {}
    for name, value in sorted(overrides.items()):
        out[name] = str(value) if isinstance(value, Decimal) else list(value) if isinstance(value, tuple) else value
    return out


def encode_record(overrides: Mapping[str, Any]) -> bytes:
    return json.dumps(to_json_values(overrides), separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Resolved:
    """The thresholds in force: the default, each tenant with a record, and the records that could not apply."""

    default: DetectorConfig
    tenants: dict[str, DetectorConfig] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # key -> why its record is not applied


def resolve(records: Mapping[str, Overrides]) -> Resolved:
    """Layer the records: built-in defaults ← ``*`` ← tenant. A record whose combination is invalid is not
    applied (its tenant keeps the default; a bad ``*`` leaves the built-in default) and is named in ``errors``."""
    errors: dict[str, str] = {}
    default = DetectorConfig()
    if DEFAULT_KEY in records:
        try:
            default = replace_config(default, records[DEFAULT_KEY])
        except ValueError as exc:
            errors[DEFAULT_KEY] = str(exc)
    tenants: dict[str, DetectorConfig] = {}
    for key, overrides in records.items():
        if key == DEFAULT_KEY:
            continue
        try:
            tenants[key] = replace_config(default, overrides)
        except ValueError as exc:
            errors[key] = str(exc)
    return Resolved(default, tenants, errors)


def assignments(pairs: list[str]) -> dict[str, str]:
    """``key=value`` words of the command line (``ValueError`` naming the first malformed one)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected key=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """One record to publish: its overrides before and after (None: no record, i.e. a tombstone)."""

    key: str
    before: Overrides | None
    after: Overrides | None

    def lines(self) -> list[str]:
        """What changes, one line per setting: ``name: old → new`` (``-`` where a setting is not overridden)."""
        before, after = self.before or {}, self.after or {}
        out = []
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if old != new:
                out.append(f"{name}: {_show(old)} → {_show(new)}")
        return out


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return ",".join(value) if isinstance(value, tuple) else str(value)


def plan_set(current: Mapping[str, Overrides], key: str, values: Mapping[str, Any]) -> Change:
    """``set``: the key's record with these settings changed (the others kept), validated as a whole."""
    merged = {**current.get(key, {}), **parse_record(key, values)}
    _check(current, {key: merged})
    return Change(key, current.get(key), merged)


def plan_reset(current: Mapping[str, Overrides], key: str) -> Change:
    """``reset``: a tombstone for the key (``ValueError`` when it has no record)."""
    check_key(key)
    if key not in current:
        raise ValueError(f"no thresholds are set for {key!r}")
    return Change(key, current[key], None)


def parse_document(document: Any) -> dict[str, Overrides]:
    """The records of a YAML document of ``default:`` and ``tenants: {T: {...}}`` (``ValueError`` naming the
    first bad part)."""
    if not isinstance(document, Mapping) or not document:
        raise ValueError("expected a mapping with `default:` and/or `tenants:`")
    unknown = sorted(str(k) for k in document if k not in ("default", "tenants"))
    if unknown:
        raise ValueError(f"unknown top-level key {unknown[0]!r} (expected default, tenants)")
    wanted: dict[str, Overrides] = {}
    if document.get("default") is not None:
        wanted[DEFAULT_KEY] = _record(DEFAULT_KEY, document["default"])
    tenants = document.get("tenants") or {}
    if not isinstance(tenants, Mapping):
        raise ValueError("tenants: expected a mapping of tenant to settings")
    for tenant, values in tenants.items():
        key = str(tenant)
        if key == DEFAULT_KEY:
            raise ValueError("tenants: '*' is the default; put it under `default:`")
        wanted[key] = _record(key, values or {})
    return wanted


def plan_apply(current: Mapping[str, Overrides], document: Any) -> list[Change]:
    """``apply``: each record named in the document (see :func:`parse_document`) is replaced by the file's
    settings; records not named are kept. Everything is validated, together with the records kept, before
    anything would be published; the changes are the records that differ."""
    wanted = parse_document(document)
    _check(current, wanted)
    return [Change(k, current.get(k), v) for k, v in wanted.items() if current.get(k) != v]


def _record(key: str, values: Any) -> Overrides:
    where = "default" if key == DEFAULT_KEY else f"tenants.{key}"
    try:
        return parse_record(key, values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check(current: Mapping[str, Overrides], changed: Mapping[str, Overrides]) -> None:
    """Every record the change touches must resolve, and so must every record that resolved before it (a new
    ``*`` may break a tenant's record); a record that was already broken does not block an unrelated change."""
    before = resolve(current).errors
    errors = {k: v for k, v in resolve({**current, **changed}).errors.items() if k in changed or k not in before}
    if errors:
        key = DEFAULT_KEY if DEFAULT_KEY in errors else sorted(errors)[0]
        where = "default" if key == DEFAULT_KEY else f"tenant {key}"
        raise ValueError(f"{where}: {errors[key]}")
