"""Alert routing: rules by tenant, team, feature, kind and severity that send an alert to named destinations.

One YAML (or JSON) file, ``COSTPLANE_ALERTS_ROUTING_FILE``::

    destinations:
      growth-slack: {slack: "https://hooks.slack.com/services/T0/B0/xyz"}
      payments-pager: {pagerduty: "<32-character routing key>"}
      audit-hook: {webhook: "https://audit.example.com/costplane"}
    routes:
      - match: {tenant: acme, team: growth}          # every key given must match; a value may be a list
        to: [growth-slack]
      - match: {kind: [budget_block, budget_forecast]}
        severity: critical                            # this route's lowest severity (default: info)
        to: [payments-pager]
    default: [audit-hook]                             # when no route matches (optional)

Every route that matches adds its destinations (each destination gets an alert once); when none matches, the
``default`` destinations get it. ``team`` and ``feature`` are read from the alert's subject. The single targets of
``COSTPLANE_ALERTS_SLACK_WEBHOOK_URL`` / ``_PAGERDUTY_ROUTING_KEY`` / ``_WEBHOOK_URLS`` keep receiving everything
their minimum severity lets through. A resolve carries its incident's top severity, so it follows its trigger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costplane.streams.alerting.model import AlertEvent, severity_rank

MATCH_KEYS = ("tenant", "team", "feature", "kind", "severity")
DESTINATION_TYPES = ("slack", "pagerduty", "webhook")
SEVERITIES = ("info", "warning", "critical")


class RoutingError(ValueError):
    """A routing file that cannot be used (the message names the entry and the problem)."""


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    kind: str  # slack | pagerduty | webhook
    secret: str  # the webhook URL, or the PagerDuty routing key


@dataclass(frozen=True, slots=True)
class Route:
    match: Mapping[str, frozenset[str]]
    to: tuple[str, ...]
    severity: str = "info"

    def matches(self, event: AlertEvent) -> bool:
        if severity_rank(event.severity) < severity_rank(self.severity):  # type: ignore[arg-type]
            return False
        values = {
            "tenant": event.tenant,
            "kind": event.kind,
            "severity": event.severity,
            "team": event.subject.get("team"),
            "feature": event.subject.get("feature"),
        }
        return all(values[key] in wanted for key, wanted in self.match.items())


@dataclass(frozen=True, slots=True)
class Routing:
    destinations: Mapping[str, Destination]
    routes: tuple[Route, ...]
    default: tuple[str, ...] = ()

    def destinations_for(self, event: AlertEvent) -> list[str]:
        """The destination names an alert goes to, in the order the routes name them (each once)."""
        chosen: list[str] = []
        for route in self.routes:
            if route.matches(event):
                chosen += [d for d in route.to if d not in chosen]
        return chosen if chosen else list(self.default)


def _names(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise RoutingError(f"{where}: a name or a list of names")
    return tuple(items)


def parse_routing(document: Any) -> Routing:
    """A parsed routing document → :class:`Routing`; every name and key checked (one line per problem)."""
    if not isinstance(document, Mapping):
        raise RoutingError("a routing file is a mapping with destinations and routes")
    unknown = sorted(set(document) - {"destinations", "routes", "default"})
    if unknown:
        raise RoutingError(f"unknown routing key(s) {', '.join(map(str, unknown))}; use destinations, routes, default")
    raw_destinations = document.get("destinations") or {}
    if not isinstance(raw_destinations, Mapping) or not raw_destinations:
        raise RoutingError("destinations: a mapping of name → {slack|pagerduty|webhook: secret}")
    destinations = {str(name): _destination(str(name), spec) for name, spec in raw_destinations.items()}
    raw_routes = document.get("routes") or []
    if not isinstance(raw_routes, list):
        raise RoutingError("routes: a list of {match, to, severity}")
    routes = tuple(_route(raw, f"route {index}", destinations) for index, raw in enumerate(raw_routes))
    default = _names(document["default"], "default") if document.get("default") else ()
    _known(default, destinations, "default")
    return Routing(destinations, routes, default)


def _destination(name: str, spec: Any) -> Destination:
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DESTINATION_TYPES:
        raise RoutingError(f"destination {name}: exactly one of {', '.join(DESTINATION_TYPES)}")
    kind, secret = next(iter(spec.items()))
    if not isinstance(secret, str) or not secret:
        raise RoutingError(f"destination {name}: {kind} needs a non-empty value")
    if kind == "pagerduty" and len(secret) != 32:
        raise RoutingError(f"destination {name}: a PagerDuty routing key has 32 characters")
    if kind != "pagerduty" and not secret.startswith(("https://", "http://")):
        raise RoutingError(f"destination {name}: {kind} needs an http(s) URL")
    return Destination(name, str(kind), secret)


def _route(raw: Any, where: str, destinations: Mapping[str, Destination]) -> Route:
    if not isinstance(raw, Mapping) or "to" not in raw or set(raw) - {"match", "to", "severity"}:
        raise RoutingError(f"{where}: keys are match, to (required) and severity")
    match_raw = raw.get("match") or {}
    if not isinstance(match_raw, Mapping):
        raise RoutingError(f"{where}: match is a mapping of {', '.join(MATCH_KEYS)}")
    match: dict[str, frozenset[str]] = {}
    for key, value in match_raw.items():
        if key not in MATCH_KEYS:
            raise RoutingError(f"{where}: cannot match on {key!s}; use {', '.join(MATCH_KEYS)}")
        match[str(key)] = frozenset(_names(value, f"{where}: match {key}"))
    severity = str(raw.get("severity", "info"))
    if severity not in SEVERITIES:
        raise RoutingError(f"{where}: severity is one of {', '.join(SEVERITIES)}")
    to = _names(raw["to"], f"{where}: to")
    _known(to, destinations, where)
    return Route(match, to, severity)


def _known(names: Sequence[str], destinations: Mapping[str, Destination], where: str) -> None:
    missing = [d for d in names if d not in destinations]
    if missing:
        raise RoutingError(f"{where}: unknown destination(s) {', '.join(missing)}")


def load_routing(path: Path) -> Routing:
    """Read a routing file (JSON when it ends in ``.json``, else YAML)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutingError(f"cannot read routing file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    import yaml

    try:
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise RoutingError(f"{path}: not valid {kind}: {' '.join(str(exc).split())[:200]}") from None
    try:
        return parse_routing(document)
    except RoutingError as exc:
        raise RoutingError(f"{path}: {exc}") from None
