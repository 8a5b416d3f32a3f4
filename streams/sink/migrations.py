"""Numbered, checksummed schema migrations from ``sql/migrations/NNNN_name.sql``.

Each file holds ``;``-separated idempotent statements (``CREATE … IF NOT EXISTS``) with ``$db`` for the
database. Applied files are recorded in ``schema_migrations`` (version, name, checksum, applied_at); a file whose
text changed after it was applied is refused rather than silently diverging from what ran. The raw-events TTL is
a setting, not a migration: :func:`apply_ttl` reconciles it on every ``migrate``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Any

from costplane.streams.sink.errors import MigrationError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS $db.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``$db`` bound, comments and empty pieces dropped."""
        text = Template(self.sql).substitute(db=database)
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
        return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One file and whether (and how) it was applied."""

    version: int
    name: str
    checksum: str
    applied_at: datetime | None
    applied_checksum: str | None

    @property
    def status(self) -> str:
        if self.applied_at is None:
            return "pending"
        return "applied" if self.applied_checksum == self.checksum else "changed"


def load_migrations(source: dict[str, str] | None = None) -> list[Migration]:
    """Migrations in version order, from the packaged ``sql/migrations`` or an explicit ``{file name: sql}``."""
    if source is None:
        folder = resources.files("costplane.sql") / "migrations"
        source = {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".sql")}
    result: list[Migration] = []
    for file_name, sql in source.items():
        match = _NAME.match(file_name)
        if not match:
            raise MigrationError(f"migration file name {file_name!r} is not NNNN_name.sql")
        result.append(Migration(int(match.group(1)), match.group(2), sql))
    result.sort(key=lambda m: m.version)
    versions = [m.version for m in result]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {sorted(source)}")
    return result


def _applied(client: Any, database: str) -> dict[int, tuple[str, str, datetime]]:
    client.command(Template(SCHEMA_MIGRATIONS_DDL).substitute(db=database))
    rows = client.query(
        f"SELECT version, name, checksum, applied_at FROM {database}.schema_migrations ORDER BY version"
    ).result_rows
    return {int(v): (str(n), str(c), a) for v, n, c, a in rows}


def status(client: Any, database: str, migrations: list[Migration] | None = None) -> list[MigrationState]:
    """Every known migration with its state (pending, applied, or changed since applied)."""
    migrations = load_migrations() if migrations is None else migrations
    applied = _applied(client, database)
    return [
        MigrationState(
            m.version,
            m.name,
            m.checksum,
            applied[m.version][2] if m.version in applied else None,
            applied[m.version][1] if m.version in applied else None,
        )
        for m in migrations
    ]


def migrate(
    client: Any, database: str, raw_ttl_days: int = 0, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply pending migrations in order and reconcile the TTL; returns what was applied now (callers report it:
    this function does not log, so ``costplane db migrate --json`` keeps stdout to one JSON document).

    Refuses (before running anything) when an applied file's checksum changed: add a new numbered file instead.
    Statements are idempotent, so a crash mid-file is fixed by running ``migrate`` again.
    """
    migrations = load_migrations() if migrations is None else migrations
    applied = _applied(client, database)
    changed = [m for m in migrations if m.version in applied and applied[m.version][1] != m.checksum]
    if changed:
        names = ", ".join(f"{m.version:04d}_{m.name}.sql" for m in changed)
        raise MigrationError(
            f"refusing to migrate {database}: already-applied migration(s) changed since they ran: {names}. "
            "Restore the applied text and put schema changes in a new numbered file."
        )
    done: list[Migration] = []
    for m in migrations:
        if m.version in applied:
            continue
        for stmt in m.statements(database):
            try:
                client.command(stmt)
            except Exception as exc:  # noqa: BLE001 - re-raised typed with the file name
                raise MigrationError(f"migration {m.version:04d}_{m.name}.sql failed: {exc}") from exc
        client.insert(
            f"{database}.schema_migrations",
            [(m.version, m.name, m.checksum, datetime.now(UTC))],
            column_names=["version", "name", "checksum", "applied_at"],
        )
        done.append(m)
    if any(m.version == REPORT_ROLLUPS_VERSION for m in done):
        backfill_report_rollups(client, database)
    if any(m.name == "usage_events" for m in migrations):
        apply_ttl(client, database, raw_ttl_days)
    return done


#: The migration that added the report rollups; the raw events already stored then had none.
REPORT_ROLLUPS_VERSION = 5


def backfill_report_rollups(client: Any, database: str) -> None:
    """Roll up the raw events stored before the report rollups existed (run once, as their migration applies).

    Rows ingested before that migration was recorded were written by a sink that did not write these rollups; rows
    after it have theirs. The rollups are computed by the same projection the reports use on raw events
    (``sql/queries/raw_as_rollup.sql``); events the raw TTL already dropped cannot be rolled up.
    """
    from costplane.reports.sql import load_query
    from costplane.streams.sink.processor import FAMILIES, GRANULARITIES, ROLLUP_MEASURES

    applied = client.query(
        f"SELECT min(applied_at) FROM {database}.schema_migrations WHERE version = {{v:UInt32}}",
        parameters={"v": REPORT_ROLLUPS_VERSION},
    ).result_rows[0][0]
    source = Template(load_query("raw_as_rollup")).substitute(
        db=database, range="ingested_at < {cutoff:DateTime64(3, 'UTC')}", tenant=""
    )
    start_of = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}
    for family in FAMILIES:
        dims = ", ".join(family.dimensions)
        sums = ", ".join(f"sum({m})" for m in ROLLUP_MEASURES)
        for granularity in GRANULARITIES:
            client.command(
                f"INSERT INTO {database}.{family.table(granularity)} ({', '.join(family.columns)}) "
                f"SELECT toDateTime({start_of[granularity]}(bucket), 'UTC') AS rollup_bucket, {dims}, {sums}, "
                f"min(first_at), max(last_at) FROM ({source}) GROUP BY rollup_bucket, {dims}",
                parameters={"cutoff": applied},
            )


def apply_ttl(client: Any, database: str, raw_ttl_days: int) -> None:
    """Make the raw events' TTL match the setting (0 = keep forever); a no-op when it already does.

    The TTL counts from ``ingested_at``, not ``occurred_at``: a late event older than the TTL must still land in
    the raw table, because crash recovery rebuilds a batch's rollups and seen marks from its raw rows.
    """
    ddl = str(client.command(f"SHOW CREATE TABLE {database}.usage_events"))
    has_ttl = "TTL " in ddl
    if raw_ttl_days > 0:
        wanted = f"toDateTime(ingested_at) + toIntervalDay({raw_ttl_days})"
        if wanted not in ddl.replace("\\n", " "):
            client.command(
                f"ALTER TABLE {database}.usage_events MODIFY TTL toDateTime(ingested_at) + INTERVAL {raw_ttl_days} DAY"
            )
    elif has_ttl:
        client.command(f"ALTER TABLE {database}.usage_events REMOVE TTL")
