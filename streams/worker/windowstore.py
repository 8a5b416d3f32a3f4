"""Where the stream role keeps its spend windows: Redis, fenced by source offsets, one round trip per batch.

Why Redis and not a changelog-backed Faust table: with per-user budgets nearly every event touches its own window
key, and a changelog record per key per batch (encoded, produced, flushed before the offsets may be committed) was
most of the worker's time. The guard's counters already live in Redis and had to be written for every touched key
anyway; putting the worker's authoritative windows beside them makes that the *only* write, done by one Lua script
per tenant (all of a tenant's keys share one hash slot, so it also runs on Redis Cluster).

Exactness comes from a **fence**: each tenant's meta hash holds, per source partition, the last offset whose
events are in the windows (``o:<partition>``). The script advances it in the same atomic step that writes the
counts, and refuses to write when the fence is not the one the worker read (another worker took the partition
over and moved on). So a redelivered message (at or below the fence) is skipped, a crash between the write and
the Kafka offset commit changes nothing, and a zombie worker after a rebalance cannot double-count. The meta hash
also indexes the member keys holding a standing decision (``s:<state key>`` → until), so rollover lifts survive a
restart without a scan.

Layout (prefix configurable, tenant always in the key)::

    {prefix}:{tenant}:worker:{group}                   hash  o:<partition> → offset, s:<budget>|<member> → until_ms
    {prefix}:{tenant}:win:{group}:<budget>|<member>    string  JSON window state (see streams.core.spend), PX ttl
    {prefix}:worker:{group}:tenants                    set     tenants with a meta hash (read on partition take-over)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster

from costplane.enforcers.scripts import SET_COUNTER
from costplane.enforcers.store import REDIS_ERRORS
from costplane.publisher.identifiers import tenant_tag
from costplane.streams.core.spend import State, split_key, tenant_of


def _lua(name: str) -> str:
    return resources.files("costplane.streams.worker").joinpath(f"lua/{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class WindowKeys:
    """Key names of the worker's windows, per consumer group (two deployments on one Redis never mix)."""

    prefix: str
    group: str

    def meta(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant_tag(tenant)}}}:worker:{self.group}"

    def window(self, state_key: str) -> str:
        return self.tenant_window(tenant_of(split_key(state_key)[1]), state_key)

    def tenant_window(self, tenant: str, state_key: str) -> str:
        """:meth:`window` when the caller already knows the key's tenant (the batch path: no parsing per key)."""
        return f"{self.prefix}:{{{tenant_tag(tenant)}}}:win:{self.group}:{state_key}"

    def tenants(self) -> str:
        """The group's registry of tenants with windows: a worker taking partitions over reads their metas."""
        return f"{self.prefix}:worker:{self.group}:tenants"


@dataclass(slots=True)
class TenantMeta:
    """What the worker knows of one tenant: its fences per partition and its keys with a standing decision."""

    fences: dict[int, int] = field(default_factory=dict)
    standing: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> TenantMeta:
        meta = cls()
        for k, v in raw.items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            value = int(v)
            if name.startswith("o:"):
                meta.fences[int(name[2:])] = value
            elif name.startswith("s:"):
                meta.standing[name[2:]] = value
        return meta


def _bulk(value: str | int) -> str:
    """One RESP bulk string, as text (its length counts characters: :meth:`TenantCommit.wire` checks ASCII)."""
    text = value if value.__class__ is str else str(value)
    return f"${len(text)}\r\n{text}\r\n"


@lru_cache(maxsize=8192)
def _bulk_int(value: int) -> str:
    """:func:`_bulk` of an integer, remembered: a batch repeats the same few (key indexes, bucket starts, TTLs)."""
    text = str(value)
    return f"${len(text)}\r\n{text}\r\n"


@dataclass(slots=True)
class TenantCommit:
    """One tenant's writes for a batch, as the commit script's keys and arguments.

    ``fence`` is ``(partition, expected, new)`` — expected -1 when no fence exists yet — or None for a write that
    only needs the tenant's keys (a timer re-evaluation). The op helpers name keys by index into ``keys``.

    Each key and op is also framed for the wire as it is added (one format per op instead of one per argument
    when the call is sent): a batch with per-user budgets carries a dozen small arguments per touched key.
    """

    tenant: str
    meta_key: str
    fence: tuple[int, int, int] | None = None
    # Filled by the op helpers only (not constructor arguments): the frames must always match keys and ops.
    keys: list[str] = field(default_factory=list, init=False)
    ops: list[str | int] = field(default_factory=list, init=False)
    states: dict[str, State] = field(default_factory=dict)  # what the cache holds once committed
    dropped: list[str] = field(default_factory=list)  # state keys deleted: the cache forgets them once committed
    standing: dict[str, int | None] = field(default_factory=dict)  # None = no longer standing
    _index: dict[str, int] = field(default_factory=dict, init=False)
    _framed: list[str] = field(default_factory=list, init=False)  # keys[i] framed, in order
    _framed_ops: list[str] = field(default_factory=list, init=False)  # each op framed, in order

    def _key(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            self.keys.append(key)
            self._framed.append(f"${len(key)}\r\n{key}\r\n")
            idx = self._index[key] = len(self.keys) + 1  # KEYS[1] is the meta hash
        return idx

    def set(self, key: str, value: str, ttl_ms: int) -> None:
        idx, ttl = self._key(key), max(int(ttl_ms), 1)
        self.ops += ["S", idx, value, ttl]
        self._framed_ops.append(f"$1\r\nS\r\n{_bulk_int(idx)}${len(value)}\r\n{value}\r\n{_bulk_int(ttl)}")

    def hset(self, key: str, field_name: str, value: str | int, ttl_ms: int | None) -> None:
        op: list[str | int] = ["H", self._key(key), field_name, value, "" if ttl_ms is None else max(int(ttl_ms), 1)]
        self.ops += op
        self._framed_ops.append("".join(map(_bulk, op)))

    def delete(self, key: str) -> None:
        op: list[str | int] = ["D", self._key(key)]
        self.ops += op
        self._framed_ops.append("".join(map(_bulk, op)))

    def hdel(self, key: str, field_name: str) -> None:
        op: list[str | int] = ["X", self._key(key), field_name]
        self.ops += op
        self._framed_ops.append("".join(map(_bulk, op)))

    def counter(self, key: str, bucket: int, amount: int, ttl_ms: int) -> None:
        """Set a guard counter bucket to the exact total (``set_counter``: keeps the guard's running total right)."""
        idx, ttl = self._key(key), max(int(ttl_ms), 1)
        self.ops += ["R", idx, bucket, amount, ttl]
        self._framed_ops.append(f"$1\r\nR\r\n{_bulk_int(idx)}{_bulk_int(bucket)}{_bulk_int(amount)}{_bulk_int(ttl)}")

    def _head(self) -> list[str | int]:
        if self.fence is None:
            return ["", "", ""]
        partition, expected, new = self.fence
        return [f"o:{partition}", "" if expected < 0 else expected, "" if new <= expected else new]

    def script_args(self) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of ``lua/commit.lua``."""
        return [self.meta_key, *self.keys], [*self._head(), *self.ops]

    def wire(self, sha: bytes) -> bytes:
        """``EVALSHA`` of :meth:`script_args` in RESP2, from the frames built as keys and ops were added: joined as
        text and encoded once, since for ASCII (JSON states, decimal numbers and, almost always, key names) a
        string's length is its byte length. Other text takes :func:`_packed_eval_bytes`. redis-py's generic packer
        cost more than the script itself: a batch carries thousands of small arguments."""
        head = self._head()
        body = "".join([_bulk(self.meta_key), *self._framed, *map(_bulk, head), *self._framed_ops])
        if not body.isascii():
            return _packed_eval_bytes(sha, *self.script_args())
        numkeys = str(len(self.keys) + 1)
        return (
            b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (len(self.keys) + len(head) + len(self.ops) + 4, sha)
            + (f"${len(numkeys)}\r\n{numkeys}\r\n{body}").encode()
        )


class WindowBackend(Protocol):
    """The storage the worker's windows need: load tenants and states, commit per tenant atomically."""

    def load_meta(self, tenants: Sequence[str]) -> dict[str, TenantMeta]: ...

    def register_tenants(self, tenants: Sequence[str]) -> None: ...

    def registered_tenants(self) -> list[str]: ...

    def load_states(self, keys: Sequence[str]) -> dict[str, State | None]: ...

    def commit(self, commits: Sequence[TenantCommit]) -> list[int | None]:
        """Per commit: None when written, or the fence found instead of the expected one (nothing written)."""
        ...

    def open_stream(self) -> CommitStream:
        """A stream of commits sent one by one while the batch is still being computed (see :class:`CommitStream`)."""
        ...


class CommitStream(Protocol):
    """Commits written as soon as each tenant's part of a batch is computed, replies read once at the end.

    Why: Redis runs one tenant's script while the worker computes the next tenant's, instead of the worker waiting
    for all of them after computing everything. ``send`` never raises: a failed write breaks the stream and
    :meth:`finish` raises, and the caller then commits everything again the plain way (each commit carries its
    fence, so one that did go through the first time is recognised, not counted twice).
    """

    def send(self, commit: TenantCommit, register: bool) -> None:
        """Write ``commit`` now (after adding its tenant to the registry when ``register``)."""
        ...

    def finish(self) -> list[int | None]:
        """The results of the sent commits, in the order sent (as :meth:`WindowBackend.commit`); raises on error."""
        ...

    def abort(self) -> None:
        """Give the stream up without reading its replies (its connection is closed)."""
        ...


def _decode_state(raw: Any) -> State | None:
    if raw is None:
        return None
    value: State = json.loads(raw)
    return value


def _fence_value(raw: Any) -> int:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text) if text else -1


def _packed_command(*parts: str | int | bytes) -> bytes:
    """One command in RESP2 for any UTF-8 text: every argument encoded and measured in bytes."""
    out = [b"*%d\r\n" % len(parts)]
    for value in parts:
        raw = value if isinstance(value, bytes) else value.encode() if isinstance(value, str) else b"%d" % value
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _packed_eval_bytes(sha: bytes, keys: Sequence[str], args: Sequence[str | int]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` (:meth:`TenantCommit.wire`'s path for text that is not ASCII, and
    the reference its frames must match)."""
    return _packed_command(b"EVALSHA", sha, len(keys), *keys, *args)


class RedisWindowBackend:
    """:class:`WindowBackend` on Redis: one pipeline per load and per commit, one script call per tenant."""

    def __init__(self, client: redis.Redis | RedisCluster, keys: WindowKeys) -> None:
        self.client = client
        self.keys = keys
        self._source = SET_COUNTER + _lua("commit")  # the guard's counter update, the same code as its reconcile
        self._script = client.register_script(self._source)  # the cluster's path: EVALSHA, the source on NOSCRIPT
        self._sha = self._script.sha.encode()  # the single-node path frames its own EVALSHA with the same digest
        self._loaded = False

    def load_meta(self, tenants: Sequence[str]) -> dict[str, TenantMeta]:
        pipe = self.client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(self.keys.meta(tenant))
        raws = pipe.execute()
        return {t: TenantMeta.from_hash(raw) for t, raw in zip(tenants, raws, strict=True)}

    def register_tenants(self, tenants: Sequence[str]) -> None:
        self.client.sadd(self.keys.tenants(), *tenants)

    def registered_tenants(self) -> list[str]:
        members = self.client.smembers(self.keys.tenants())
        return sorted(t.decode() if isinstance(t, bytes) else str(t) for t in members)

    def load_states(self, keys: Sequence[str]) -> dict[str, State | None]:
        by_tenant: dict[str, list[str]] = {}
        for key in keys:
            by_tenant.setdefault(tenant_of(split_key(key)[1]), []).append(key)
        pipe = self.client.pipeline(transaction=False)
        groups = list(by_tenant.values())
        for group in groups:  # one MGET per tenant: a tenant's keys share a hash slot (also on a cluster, where
            pipe.execute_command("MGET", *(self.keys.window(k) for k in group))  # the pipeline routes it by key)
        replies = pipe.execute()
        out: dict[str, State | None] = {}
        for group, values in zip(groups, replies, strict=True):
            for key, raw in zip(group, values, strict=True):
                out[key] = _decode_state(raw)
        return out

    def commit(self, commits: Sequence[TenantCommit]) -> list[int | None]:
        """All tenants' script calls written at once on one pooled connection, then every reply read.

        Any error disconnects (no reply can be read as a later call's) and raises: the caller retries the same
        commits, and a commit that had gone through answers with its own new fence, which counts as written.
        """
        if not commits:
            return []
        stream = self.open_stream()
        for c in commits:
            stream.send(c, register=False)
        return stream.finish()

    def open_stream(self) -> RedisCommitStream | ClusterCommitStream:
        if isinstance(self.client, RedisCluster):
            return ClusterCommitStream(self)
        if not self._loaded:
            self.client.script_load(self._source)
            self._loaded = True
        return RedisCommitStream(self)

    def script_lost(self) -> None:
        """A NOSCRIPT or a broken connection (Redis restarted or flushed): load the script again next time."""
        self._loaded = False


def _commit_result(c: TenantCommit, reply: Any) -> int | None:
    """The commit script's reply → None (written) or the fence that refused it."""
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    current = None if status == "ok" else _fence_value(reply[1])
    if current is not None and c.fence is not None and current == c.fence[2] and c.fence[2] > c.fence[1]:
        current = None  # a retried commit whose first attempt went through: its own fence
    return current


class ClusterCommitStream:
    """:class:`CommitStream` on Redis Cluster: each tenant's script goes to the master of its hash slot.

    Every key a commit touches carries the tenant's hash tag (docs/enforcement.md), so one script call per tenant
    runs on one node; redis-py's cluster client routes it by its first key. Sent one by one (no pipelining across
    nodes): a failure raises at :meth:`finish` like the single-node stream, and the caller commits again.
    """

    def __init__(self, backend: RedisWindowBackend) -> None:
        self.backend = backend
        self.results: list[int | None] = []
        self.error: BaseException | None = None

    def send(self, commit: TenantCommit, register: bool) -> None:
        if self.error is not None:
            return
        client = self.backend.client
        keys, args = commit.script_args()
        try:
            if register:
                client.sadd(self.backend.keys.tenants(), commit.tenant)
            reply = self.backend._script(keys, args)  # a node that has not seen the script is sent its source
        except REDIS_ERRORS + (OSError,) as exc:
            self.error = exc
            return
        self.results.append(_commit_result(commit, reply))

    def finish(self) -> list[int | None]:
        if self.error is not None:
            raise redis.ConnectionError(f"window commit failed: {self.error}") from self.error
        return self.results

    def abort(self) -> None:
        if self.error is None:
            self.error = redis.ConnectionError("the stream was aborted before its replies were read")


class RedisCommitStream:
    """:class:`CommitStream` on one pooled connection: each send is one socket write, replies are read at finish."""

    def __init__(self, backend: RedisWindowBackend) -> None:
        self.backend = backend
        client = backend.client
        if not isinstance(client, redis.Redis):
            raise TypeError("a cluster client commits through ClusterCommitStream")
        self.pool = client.connection_pool
        self.conn: Any = None
        self.sent: list[TenantCommit | None] = []  # None: the reply of a registry SADD, read and dropped
        self.error: BaseException | None = None

    def send(self, commit: TenantCommit, register: bool) -> None:
        if self.error is not None:
            return
        packed = commit.wire(self.backend._sha)
        if register:
            packed = _packed_command(b"SADD", self.backend.keys.tenants(), commit.tenant) + packed
        try:
            if self.conn is None:
                self.conn = self.pool.get_connection()
            self.conn.send_packed_command([packed], check_health=False)
        except (redis.RedisError, OSError) as exc:
            self.error = exc
            self._close()
            return
        if register:
            self.sent.append(None)
        self.sent.append(commit)

    def finish(self) -> list[int | None]:
        if self.error is not None:
            raise redis.ConnectionError(f"window commit stream broke: {self.error}") from self.error
        if self.conn is None:
            return []
        try:
            replies = [self.conn.read_response() for _ in self.sent]
        except BaseException:
            self._close()
            raise
        self.pool.release(self.conn)
        self.conn = None
        return [_commit_result(c, reply) for c, reply in zip(self.sent, replies, strict=True) if c is not None]

    def abort(self) -> None:
        if self.error is None:
            self.error = redis.ConnectionError("the stream was aborted before its replies were read")
        self._close()

    def _close(self) -> None:
        """No reply may ever be read as a later command's: the connection is closed, not reused."""
        self.backend.script_lost()
        if self.conn is not None:
            self.conn.disconnect()
            self.pool.release(self.conn)
            self.conn = None


class MemoryWindowBackend:
    """The same behaviour in a dict, for unit tests of the worker's window logic (no network)."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.ttls: dict[str, int] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.registry: set[str] = set()
        self.keys = WindowKeys("mem", "g")

    def load_meta(self, tenants: Sequence[str]) -> dict[str, TenantMeta]:
        return {t: TenantMeta.from_hash(self.hashes.get(self.keys.meta(t), {})) for t in tenants}

    def register_tenants(self, tenants: Sequence[str]) -> None:
        self.registry.update(tenants)

    def registered_tenants(self) -> list[str]:
        return sorted(self.registry)

    def load_states(self, keys: Sequence[str]) -> dict[str, State | None]:
        return {k: _decode_state(self.strings.get(self.keys.window(k))) for k in keys}

    def commit(self, commits: Sequence[TenantCommit]) -> list[int | None]:
        return [self._commit_one(c) for c in commits]

    def open_stream(self) -> MemoryCommitStream:
        return MemoryCommitStream(self)

    def _commit_one(self, c: TenantCommit) -> int | None:
        keys, args = c.script_args()
        meta = self.hashes.setdefault(keys[0], {})
        fence_field, expected, new = (str(a) for a in args[:3])
        if fence_field:
            current = meta.get(fence_field, "")
            if current != expected:
                return _fence_value(current)
            if new:
                meta[fence_field] = new
        for op, operands in _ops(args[3:]):
            key = keys[int(operands[0]) - 1]  # KEYS is 1-based in the script
            if op == "S":
                self.strings[key] = str(operands[1])
                self.ttls[key] = int(operands[2])
            elif op == "H":
                self.hashes.setdefault(key, {})[str(operands[1])] = str(operands[2])
                if operands[3] != "":
                    self.ttls[key] = int(operands[3])
            elif op == "D":
                self.strings.pop(key, None)
                self.hashes.pop(key, None)
            elif op == "X":
                self.hashes.get(key, {}).pop(str(operands[1]), None)
            elif op == "R":  # set_counter without a guard's running state (this backend has no guard)
                self.hashes.setdefault(key, {})[str(operands[1])] = str(operands[2])
                self.ttls[key] = max(self.ttls.get(key, 0), int(operands[3]))
        return None


class MemoryCommitStream:
    """:class:`CommitStream` of the in-memory backend: commits apply at finish, as Redis replies would arrive."""

    def __init__(self, backend: MemoryWindowBackend) -> None:
        self.backend = backend
        self.sent: list[tuple[TenantCommit, bool]] = []
        self.aborted = False

    def send(self, commit: TenantCommit, register: bool) -> None:
        self.sent.append((commit, register))

    def finish(self) -> list[int | None]:
        if self.aborted:
            raise redis.ConnectionError("the stream was aborted before its replies were read")
        results: list[int | None] = []
        for commit, register in self.sent:
            if register:
                self.backend.register_tenants([commit.tenant])
            results.append(self.backend._commit_one(commit))
        return results

    def abort(self) -> None:
        self.aborted = True
        self.sent.clear()


_ARITY = {"S": 3, "H": 4, "D": 1, "X": 2, "R": 4}


def _ops(args: Sequence[str | int]) -> Iterable[tuple[str, Sequence[str | int]]]:
    i = 0
    while i < len(args):
        op = str(args[i])
        n = _ARITY[op]
        yield op, args[i + 1 : i + 1 + n]
        i += 1 + n
