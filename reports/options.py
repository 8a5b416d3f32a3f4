"""What a report is asked: the range, the tenant, the grouping, the filters, how many rows.

Parsed once from the command line (or from the worker API's query string, which carries the same options), checked
before any SQL runs, so every bad request is one clear line. Times are whole minutes in UTC: the rollups the
reports read are kept per minute, hour and day, so any minute-aligned range is answered exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode

from costplane.reports.dimensions import Dimension, resolve_dimension
from costplane.reports.errors import ReportError

#: The range a report covers when ``--since`` is not given.
DEFAULT_RANGE = timedelta(days=30)
_RELATIVE = re.compile(r"^(?P<n>\d+)\s*(?P<unit>m|min|h|d|w)$")
_UNITS = {"m": 60, "min": 60, "h": 3_600, "d": 86_400, "w": 604_800}
ALLOCATIONS = ("none", "proportional")
#: The most rows ``--top`` may ask for (ClickHouse's LIMIT takes a 64-bit count).
MAX_TOP = 1_000_000_000
#: Environments the environments report counts as production unless told otherwise.
DEFAULT_PRODUCTION_ENVS = ("prod", "production")


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def parse_time(value: str, now: datetime) -> datetime:
    """ISO date or time (naive = UTC), epoch milliseconds, or a time ago (``30m``, ``24h``, ``7d``, ``2w``)."""
    text = value.strip()
    hint = "use ISO 8601 (2026-01-31 or 2026-01-31T12:00Z), epoch ms, or a time ago such as 24h or 7d"
    try:
        relative = _RELATIVE.match(text.lower())
        if relative:
            return floor_minute(now - timedelta(seconds=int(relative["n"]) * _UNITS[relative["unit"]]))
        if text.isdigit():
            return floor_minute(datetime.fromtimestamp(int(text) / 1000, tz=UTC))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ReportError(f"cannot read time {value!r}: {hint}") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return floor_minute(moment)


@dataclass(frozen=True, slots=True)
class Grouping:
    """One ``--by`` or ``--where`` dimension: the name the user gave (the JSON key) and what it means."""

    given: str
    dimension: Dimension


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """A checked report request. ``until`` None means up to now (and anything later already stored)."""

    report: str
    since: datetime
    until: datetime | None = None
    tenant: str | None = None
    by: tuple[Grouping, ...] = ()
    where: tuple[tuple[Grouping, str], ...] = ()
    top: int | None = None
    allocate: str = "none"
    production_envs: tuple[str, ...] = DEFAULT_PRODUCTION_ENVS
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    price_version: str | None = None

    @classmethod
    def parse(
        cls,
        report: str,
        *,
        since: str | None = None,
        until: str | None = None,
        tenant: str | None = None,
        by: list[str] | tuple[str, ...] = (),
        where: list[str] | tuple[str, ...] = (),
        top: int | None = None,
        allocate: str = "none",
        production_envs: str | None = None,
        now: datetime | None = None,
        price_version: str | None = None,
    ) -> ReportOptions:
        """Options from command-line text; ``by`` items may hold comma-separated lists (``--by team,model``)."""
        moment = now or datetime.now(UTC)
        start = parse_time(since, moment) if since else floor_minute(moment - DEFAULT_RANGE)
        end = parse_time(until, moment) if until else None
        if end is not None and start >= end:
            raise ReportError(f"--since ({start:%Y-%m-%dT%H:%MZ}) must be before --until ({end:%Y-%m-%dT%H:%MZ})")
        names = [n.strip() for item in by for n in item.split(",") if n.strip()]
        if len(set(names)) != len(names):
            raise ReportError("--by names a dimension twice")
        groupings = tuple(Grouping(n, resolve_dimension(n)) for n in names)
        filters: list[tuple[Grouping, str]] = []
        for item in where:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ReportError(f"--where takes DIM=VALUE, not {item!r}")
            filters.append((Grouping(name.strip(), resolve_dimension(name.strip())), value))
        if top is not None and not 1 <= top <= MAX_TOP:
            raise ReportError(f"--top must be between 1 and {MAX_TOP:,}, not {top}")
        if allocate not in ALLOCATIONS:
            raise ReportError(f"--allocate must be one of {', '.join(ALLOCATIONS)}, not {allocate!r}")
        envs: tuple[str, ...] = DEFAULT_PRODUCTION_ENVS
        if production_envs is not None:
            envs = tuple(e.strip() for e in production_envs.split(",") if e.strip())
            if not envs:
                raise ReportError("--production needs at least one environment name")
        if tenant is not None and not tenant.strip():
            raise ReportError("--tenant must not be empty")
        if price_version is not None and not price_version.strip():
            raise ReportError("--price-version must not be empty")
        return cls(report, start, end, tenant, groupings, tuple(filters), top, allocate, envs, moment, price_version)

    def with_by(self, names: tuple[str, ...]) -> ReportOptions:
        """The same request grouped by ``names`` (a report's default grouping when none was given)."""
        return replace(self, by=tuple(Grouping(n, resolve_dimension(n)) for n in names))

    def to_query_string(self) -> str:
        """How the options travel to the worker: ``GET /api/report?report=…&since=…`` (times as ISO 8601)."""
        params: list[tuple[str, str]] = [
            ("report", self.report),
            ("since", self.since.isoformat()),
            ("now", self.now.isoformat()),
        ]
        if self.until is not None:
            params.append(("until", self.until.isoformat()))
        if self.tenant is not None:
            params.append(("tenant", self.tenant))
        params.extend(("by", g.given) for g in self.by)
        params.extend(("where", f"{g.given}={value}") for g, value in self.where)
        if self.top is not None:
            params.append(("top", str(self.top)))
        if self.allocate != "none":
            params.append(("allocate", self.allocate))
        if self.production_envs != DEFAULT_PRODUCTION_ENVS:
            params.append(("production", ",".join(self.production_envs)))
        if self.price_version is not None:
            params.append(("price_version", self.price_version))
        return urlencode(params)

    @classmethod
    def from_query_string(cls, query: str) -> ReportOptions:
        """Inverse of :meth:`to_query_string` (the worker's ``/api/report`` handler)."""
        values = parse_qs(query, keep_blank_values=True)

        def one(key: str) -> str | None:
            return values[key][-1] if key in values else None

        top = one("top")
        if top is not None and not top.lstrip("-").isdigit():
            raise ReportError(f"top must be an integer, not {top!r}")
        now_text = one("now")
        now = None
        if now_text:  # the caller's own clock, so relative times mean the same in both processes
            try:
                now = datetime.fromisoformat(now_text).astimezone(UTC)
            except ValueError:
                raise ReportError(f"cannot read now={now_text!r}") from None
        return cls.parse(
            one("report") or "spend",
            since=one("since"),
            until=one("until"),
            tenant=one("tenant"),
            by=values.get("by", []),
            where=values.get("where", []),
            top=int(top) if top is not None else None,
            allocate=one("allocate") or "none",
            production_envs=one("production"),
            now=now,
            price_version=one("price_version"),
        )
