"""``costplane rerate``: stored history priced again under another catalog, raw rows and rollups together.

A re-rate reads the raw events of a range (whole UTC days, optionally one tenant), prices each again exactly as the
worker does (the catalog version in force at its ``occurred_at`` — or one named version for every event — the
app-side result-cache rule, and the per-event ledger amounts), and writes the new ``cost_nanos``, ``price_version``,
``unpriced`` and ledger amounts. Each row records the version that priced it (``price_version``), so a report shows
the latest rating and a re-rate is visible in the data.

How it stays consistent. Every table involved is partitioned (raw events by month, rollups by month or year). For
each partition the range touches, a staging table (``<table>_rerate``, same structure) receives the partition's
rows outside the range unchanged and the range's rows re-rated (rollups rebuilt from the re-rated raw rows, the
range being whole days so every rollup bucket in it is complete), then ``ALTER TABLE … REPLACE PARTITION … FROM``
swaps it in, atomically. An interruption leaves each partition of each table either as it was or fully re-rated —
never an event half re-rated — and running again finishes the job: the same catalog gives the same rows, so a
second run changes nothing. Before writing, the range's raw events are checked against the day rollups: if raw
events have expired (``COSTPLANE_CLICKHOUSE_RAW_TTL_DAYS``) the rollups could no longer be rebuilt from them, and the
re-rate refuses rather than drop history.

Concurrency. Run through the worker that owns the database (embedded chDB: always; ``costplane rerate`` finds it),
the re-rate holds the same client lock as the sink's flush: the sink waits, and events arriving meanwhile are
inserted after the swap, priced once by the worker's catalog. Against a ClickHouse server shared by several sinks,
pause the other sinks while re-rating (a row inserted into a partition between its copy and its swap would be lost).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from costplane.logging import get_logger
from costplane.pricing.catalog import CatalogError, PriceCatalog, default_catalog, load_catalog
from costplane.pricing.ledger import LedgerAmounts, ledger_amounts
from costplane.publisher.event import UsageEvent
from costplane.reports.errors import ReportError
from costplane.streams.sink.processor import FAMILIES, GRANULARITIES, RAW_COLUMNS, rollup_all

log = get_logger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
#: What pricing an event reads from its raw row, then what a re-rate replaces.
PRICING_COLUMNS = (
    "event_id",
    "tenant",
    "provider",
    "model",
    "occurred_at",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "service_tier",
    "system_prompt_tokens",
    "result_cache_hit",
)
RATED_COLUMNS = ("cost_nanos", "price_version", "unpriced", *LedgerAmounts._fields)


class RerateError(ReportError):
    """A re-rate that cannot run (a catalog that does not parse, an unknown version, expired raw events): one line."""


@dataclass(frozen=True, slots=True)
class RerateRequest:
    """What to re-rate: whole UTC days ``[since, until)``, one tenant or all, under a catalog file or one version."""

    since: datetime
    until: datetime
    tenant: str | None = None
    catalog: str | None = None  # a catalog file (either format), read by the process that runs the re-rate
    price_version: str | None = None  # a version of the catalog in force, applied to every event
    dry_run: bool = False

    @classmethod
    def build(
        cls,
        since: datetime,
        until: datetime | None,
        *,
        now: datetime,
        tenant: str | None = None,
        catalog: str | None = None,
        price_version: str | None = None,
        dry_run: bool = False,
    ) -> RerateRequest:
        """Widen the range to whole UTC days (``until`` None: through today) and check the choice of catalog."""
        if (catalog is None) == (price_version is None):
            raise RerateError("give exactly one of --catalog FILE or --price-version V")
        start = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        end_moment = (until or now).astimezone(UTC)
        end = end_moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if until is None or end != end_moment:
            end += DAY
        if start >= end:
            raise RerateError(f"--since ({start:%Y-%m-%d}) must be before --until ({end:%Y-%m-%d})")
        if tenant is not None and not tenant.strip():
            raise RerateError("--tenant must not be empty")
        return cls(start, end, tenant, catalog, price_version, dry_run)

    def to_query_string(self) -> str:
        """How the request travels to the worker's ``/api/report`` (``report=rerate``)."""
        params = [("report", "rerate"), ("since", self.since.isoformat()), ("until", self.until.isoformat())]
        for key, value in (("tenant", self.tenant), ("catalog", self.catalog), ("price_version", self.price_version)):
            if value is not None:
                params.append((key, value))
        params.append(("dry_run", "1" if self.dry_run else "0"))
        return urlencode(params)

    @classmethod
    def from_query_string(cls, query: str) -> RerateRequest:
        values = parse_qs(query, keep_blank_values=True)

        def one(key: str) -> str | None:
            return values[key][-1] if key in values else None

        try:
            since = datetime.fromisoformat(one("since") or "")
            until = datetime.fromisoformat(one("until") or "")
        except ValueError:
            raise RerateError("rerate needs since and until as ISO 8601 times") from None
        return cls.build(
            since,
            until,
            now=until,
            tenant=one("tenant"),
            catalog=one("catalog"),
            price_version=one("price_version"),
            dry_run=one("dry_run") == "1",
        )


def rating_catalog(request: RerateRequest) -> PriceCatalog:
    """The catalog to price with: the file's versions by ``occurred_at``, or the one version named."""
    try:
        if request.catalog is not None:
            return load_catalog(Path(request.catalog))
        catalog = default_catalog()
    except CatalogError as exc:
        raise RerateError(str(exc)) from None
    for version in catalog.versions:
        if version.price_version == request.price_version:
            return PriceCatalog([version])  # a single version prices every event, whatever its time
    known = ", ".join(v.price_version for v in catalog.versions)
    raise RerateError(f"no price version {request.price_version!r} in the catalog in force (it has: {known})")


def millis(value: datetime) -> int:
    """Exact epoch millis of a datetime read back from ClickHouse (naive means UTC)."""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def rate(catalog: PriceCatalog, row: Sequence[Any]) -> tuple[Any, ...]:
    """The :data:`RATED_COLUMNS` of one event (a row in :data:`PRICING_COLUMNS` order), as the worker prices it."""
    (
        event_id,
        tenant,
        provider,
        model,
        occurred_at,
        input_tokens,
        cached,
        write,
        output,
        reasoning,
        tier,
        system,
        hit,
    ) = row
    # The event the worker priced, from its stored pricing columns; pricing and the ledger read only those, so the
    # fields not stored among them (request, attempt, status) take their plainest values.
    event = UsageEvent(
        event_id=str(event_id),
        occurred_at=millis(occurred_at),
        tenant=str(tenant),
        provider=str(provider),
        model=str(model),
        request_id=str(event_id),
        attempt=1,
        status="ok",
        input_tokens=int(input_tokens),
        cached_input_tokens=int(cached),
        cache_write_tokens=int(write),
        output_tokens=int(output),
        reasoning_tokens=int(reasoning),
        service_tier=tier,
        system_prompt_tokens=None if system is None else int(system),
        result_cache_hit=None if hit is None else bool(hit),
    )
    cost = catalog.price_event(event)
    nanos = 0 if event.result_cache_hit else cost.cost_nanos
    return (nanos, cost.price_version, cost.unpriced, *ledger_amounts(catalog, event))


@dataclass
class RerateResult:
    """Old and new totals by tenant and model, and what was written."""

    rows: list[dict[str, Any]]
    events: int
    changed: int
    versions: list[str]
    written: bool
    partitions: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "rerate",
            "rows": self.rows,
            "events": self.events,
            "changed_events": self.changed,
            "price_versions": self.versions,
            "written": self.written,
            "partitions": self.partitions,
        }


def _range_sql(request: RerateRequest, time_column: str) -> tuple[str, dict[str, Any]]:
    where = f"{time_column} >= {{since:DateTime64(3, 'UTC')}} AND {time_column} < {{until:DateTime64(3, 'UTC')}}"
    params: dict[str, Any] = {"since": request.since, "until": request.until}
    if request.tenant is not None:
        where += " AND tenant = {tenant:String}"
        params["tenant"] = request.tenant
    return where, params


def _totals(old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]) -> tuple[list[dict[str, Any]], int]:
    """Old vs new cost by tenant and model (largest new cost first) and how many events changed."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    changed = 0
    for before, after in zip(old, new, strict=True):
        g = groups[(str(before[1]), str(before[3]))]
        differs = tuple(before[len(PRICING_COLUMNS) :]) != tuple(after)
        g[0] += 1
        g[1] += 1 if differs else 0
        g[2] += int(before[len(PRICING_COLUMNS)])
        g[3] += int(after[0])
        changed += 1 if differs else 0
    rows: list[dict[str, Any]] = [
        {
            "tenant": t,
            "model": m,
            "events": v[0],
            "changed_events": v[1],
            "old_cost_nanos": v[2],
            "new_cost_nanos": v[3],
            "difference_nanos": v[3] - v[2],
        }
        for (t, m), v in groups.items()
    ]
    rows.sort(key=lambda r: (-r["new_cost_nanos"], r["tenant"], r["model"]))
    return rows, changed


def _check_rollups_complete(client: Any, database: str, request: RerateRequest, events: int) -> None:
    """The rollups are rebuilt from the raw events: refuse when the day rollups hold more than the raw table."""
    where, params = _range_sql(request, "bucket")
    counted = client.query(
        f"SELECT sum(attempts) FROM {database}.rollup_spend_day WHERE {where}", parameters=params
    ).result_rows
    in_rollups = int(counted[0][0] or 0) if counted else 0
    if in_rollups != events:
        raise RerateError(
            f"the rollups count {in_rollups} events in {request.since:%Y-%m-%d} – {request.until:%Y-%m-%d} but "
            f"{events} raw events remain (raw TTL?): re-rating would drop the others from the rollups; narrow --since"
        )


def run_rerate(client: Any, request: RerateRequest, database: str) -> RerateResult:
    """Re-rate the range (or with ``dry_run`` only compare); raises RerateError before writing anything on bad
    input. Call it where nothing else writes to the database meanwhile (see the module docstring)."""
    catalog = rating_catalog(request)
    where, params = _range_sql(request, "occurred_at")
    old = [
        tuple(r)
        for r in client.query(
            f"SELECT {', '.join((*PRICING_COLUMNS, *RATED_COLUMNS))} FROM {database}.usage_events WHERE {where} "
            "ORDER BY tenant, occurred_at, event_id",
            parameters=params,
        ).result_rows
    ]
    new = [rate(catalog, r[: len(PRICING_COLUMNS)]) for r in old]
    rows, changed = _totals(old, new)
    versions = sorted({str(n[1]) for n in new})
    if request.dry_run or not old:
        return RerateResult(rows, len(old), changed, versions, False, [])
    _check_rollups_complete(client, database, request, len(old))
    partitions = _write(client, database, request, old, new)
    log.info(
        "rerate_done",
        since=request.since.isoformat(),
        until=request.until.isoformat(),
        tenant=request.tenant,
        events=len(old),
        changed=changed,
        versions=versions,
    )
    return RerateResult(rows, len(old), changed, versions, True, partitions)


def _staging(client: Any, database: str, table: str) -> str:
    """An empty table shaped as ``table`` is now (made afresh: a migration since the last re-rate may have added
    columns, and a partition swaps only between tables of the same structure)."""
    staging = f"{database}.{table}_rerate"
    client.command(f"DROP TABLE IF EXISTS {staging}")
    client.command(f"CREATE TABLE {staging} AS {database}.{table}")
    return staging


def _partition_key(client: Any, database: str, table: str) -> str:
    found = client.query(
        "SELECT partition_key FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        parameters={"d": database, "t": table},
    ).result_rows
    if not found or not found[0][0]:
        raise RerateError(f"{database}.{table} is not partitioned: cannot swap a re-rated partition in")
    return str(found[0][0])


def _partitions(client: Any, database: str, table: str, key: str, where: str, params: dict[str, Any]) -> list[str]:
    result = client.query(
        f"SELECT DISTINCT toString({key}) FROM {database}.{table} WHERE {where} ORDER BY 1", parameters=params
    ).result_rows
    return [str(r[0]) for r in result]


def _write(
    client: Any, database: str, request: RerateRequest, old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]
) -> list[str]:
    """Raw events first, then each rollup table, one partition swap at a time."""
    values = f"{database}.rerate_values"
    client.command(f"DROP TABLE IF EXISTS {values}")
    client.command(
        f"CREATE TABLE {values} (event_id String, tenant String, "
        "cost_nanos Int64, price_version String, unpriced Bool, "
        + ", ".join(f"{c} {'UInt64' if c == 'uncached_prefix_tokens' else 'Int64'}" for c in LedgerAmounts._fields)
        + ") ENGINE = MergeTree ORDER BY (tenant, event_id)"
    )
    client.insert(
        values,
        [(o[0], o[1], *n) for o, n in zip(old, new, strict=True)],
        column_names=["event_id", "tenant", *RATED_COLUMNS],
    )
    swapped: list[str] = []
    raw_where, params = _range_sql(request, "occurred_at")
    key = _partition_key(client, database, "usage_events")
    replaced = ", ".join(f"if(v.event_id != '', v.{c}, e.{c}) AS {c}" for c in RATED_COLUMNS)
    for partition in _partitions(client, database, "usage_events", key, raw_where, params):
        staging = _staging(client, database, "usage_events")
        client.command(
            f"INSERT INTO {staging} SELECT e.* REPLACE ({replaced}) FROM {database}.usage_events AS e "
            f"LEFT JOIN {values} AS v ON v.event_id = e.event_id AND v.tenant = e.tenant "
            f"WHERE toString({key.replace('occurred_at', 'e.occurred_at')}) = {{p:String}}",
            parameters={"p": partition},
            settings={"join_use_nulls": 0},
        )
        _swap(client, database, "usage_events", staging, partition)
        swapped.append(f"usage_events:{partition}")
    rated = [
        tuple(r)
        for r in client.query(
            f"SELECT {', '.join(RAW_COLUMNS)} FROM {database}.usage_events WHERE {raw_where} ORDER BY event_id",
            parameters=params,
        ).result_rows
    ]
    rollups = rollup_all(rated)
    bucket_where, bucket_params = _range_sql(request, "bucket")
    for family in FAMILIES:
        for granularity in GRANULARITIES:
            table = family.table(granularity)
            swapped += _rebuild_rollup(
                client, database, table, family.columns, rollups[family.name][granularity], bucket_where, bucket_params
            )
    client.command(f"DROP TABLE IF EXISTS {values}")
    return swapped


def _rebuild_rollup(
    client: Any,
    database: str,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    where: str,
    params: dict[str, Any],
) -> list[str]:
    key = _partition_key(client, database, table)
    out: list[str] = []
    for partition in _partitions(client, database, table, key, where, params):
        staging = _staging(client, database, table)
        client.command(
            f"INSERT INTO {staging} SELECT * FROM {database}.{table} "
            f"WHERE toString({key}) = {{p:String}} AND NOT ({where})",
            parameters={**params, "p": partition},
        )
        mine = [r for r in rows if _key_of(key, r[0]) == partition]
        if mine:
            client.insert(staging, mine, column_names=list(columns))
        _swap(client, database, table, staging, partition)
        out.append(f"{table}:{partition}")
    return out


def _key_of(key: str, bucket: datetime) -> str:
    """The partition value of a rollup bucket for the two partition keys the rollups use."""
    if key == "toYYYYMM(bucket)":
        return f"{bucket.year}{bucket.month:02d}"
    if key == "toYear(bucket)":
        return str(bucket.year)
    raise RerateError(f"unexpected partition key {key!r}")


def _swap(client: Any, database: str, table: str, staging: str, partition: str) -> None:
    """The one atomic step: the table's partition becomes the staging table's."""
    literal = partition if partition.isdigit() else f"'{partition}'"
    client.command(f"ALTER TABLE {database}.{table} REPLACE PARTITION {literal} FROM {staging}")
    client.command(f"DROP TABLE IF EXISTS {staging}")  # the table holds its own copy of the parts now


def answer(client: Any, query_string: str, database: str) -> dict[str, Any]:
    """What ``GET /api/report?report=rerate&…`` returns (the worker runs it under its client lock)."""
    return run_rerate(client, RerateRequest.from_query_string(query_string), database).to_json()
