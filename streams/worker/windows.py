"""The stream role's spend windows: the pure core (:mod:`costplane.streams.core.spend`) over a fenced store.

Per batch: skip what the tenant's fence says is already counted, aggregate the rest once per key and bucket,
read the keys the cache does not hold (one round trip, only on a miss), apply and evaluate with the core, then
:meth:`WorkerWindows.commit` writes each tenant's windows, guard counters, decisions and fence in one atomic
script call (all tenants in one pipeline). The in-process cache is a read cache of what Redis holds: it is updated
only after a commit succeeded, bounded, and dropped on a rebalance, so it never has to be flushed anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from costplane.budgets import Budget
from costplane.budgets.windows import ROLLING
from costplane.enforcers.keys import KeyLayout
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import Decision, SpendWindows, State, split_key, tenant_of
from costplane.streams.worker.windowstore import CommitStream, TenantCommit, TenantMeta, WindowBackend, WindowKeys

#: One encoder for every state: ``json.dumps`` with ``separators`` builds a new encoder on each call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def state_json(state: State) -> str:
    """The state's compact JSON. Nearly every state is only buckets (no standing decision, no soft threshold
    notified): those are formatted directly, three times faster than the encoder, which does the rest.

    Bucket cells are always ``[int, int]`` under decimal bucket starts: the core builds them with ``int()`` and
    states read back are this function's own output.
    """
    if len(state) == 3 and state.get("d", 0) is None and state.get("soft") == []:
        return (
            '{"b":{'
            + ",".join([f'"{start}":[{v[0]},{v[1]}]' for start, v in state["b"].items()])
            + '},"soft":[],"d":null}'
        )
    return _compact_json(state)


@dataclass(frozen=True, slots=True)
class Located:
    """A priced event and where it was read: the fence compares the offset."""

    priced: PricedEvent
    partition: int
    offset: int


@dataclass(slots=True)
class Pending:
    """A computed batch, not yet written: the decision records to publish, then the commits to run."""

    commits: list[TenantCommit] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    counted: int = 0
    redelivered: int = 0
    sent: list[TenantCommit] = field(default_factory=list)  # already written to ``stream`` by count(send_early)
    stream: CommitStream | None = None

    @property
    def empty(self) -> bool:
        return not self.commits and not self.decisions


@dataclass(frozen=True, slots=True)
class _Shape:
    """What writing one budget's keys needs at a given moment, worked out once per batch and budget."""

    unit_index: int  # 0 tokens, 1 nano-USD: the state's cell column the guard counter holds
    bucket_ms: int
    window_ms: int
    state_ttl_ms: int  # the state lives a window past the current one's end


@dataclass(slots=True)
class CommitReport:
    """What a commit did: tenants fenced off (another worker owns their partition now), and those partitions."""

    fenced: list[str] = field(default_factory=list)
    fenced_partitions: set[int] = field(default_factory=set)


class WorkerWindows:
    """Windows, guard counters and decisions of the budgets this worker's partitions carry."""

    def __init__(
        self, backend: WindowBackend, keys: WindowKeys, guard_keys: KeyLayout, cache_limit: int = 200_000
    ) -> None:
        self.backend = backend
        self.keys = keys
        self.guard_keys = guard_keys
        self.cache_limit = cache_limit
        self.spend = SpendWindows()
        self.cache: dict[str, State] = {}
        self.tenants: dict[str, TenantMeta] = {}
        self.registered: set[str] = set()

    # -- the batch path -----------------------------------------------------------------------------------------
    def count(
        self, items: Sequence[Located], budgets: Sequence[Budget], now_ms: int, *, send_early: bool = False
    ) -> Pending:
        """Compute a batch's writes (reads Redis only for tenants and keys this process has not seen yet).

        Tenant by tenant: each tenant's keys are applied and evaluated, then its commit is built. With
        ``send_early`` the commit of a tenant whose part yields no decision record is written to Redis at once
        (its script runs while the next tenant is computed) and :meth:`commit` only reads its reply; a tenant with
        records waits for :meth:`commit`, after the caller has published them.
        """
        self._ensure_tenants({it.priced.event.tenant for it in items})
        fresh: list[PricedEvent] = []
        fences: dict[str, dict[int, int]] = {}
        redelivered = 0
        for it in items:
            tenant = it.priced.event.tenant
            if it.offset <= self.tenants[tenant].fences.get(it.partition, -1):
                redelivered += 1
                continue
            fresh.append(it.priced)
            slots = fences.setdefault(tenant, {})
            if it.offset > slots.get(it.partition, -1):
                slots[it.partition] = it.offset
        increments = self.spend.aggregate(fresh, budgets)
        states = self._states(increments)
        by_tenant: dict[str, dict[str, dict[int, list[int]]]] = {tenant: {} for tenant in fences}
        for key, inc in increments.items():
            by_tenant[tenant_of(split_key(key)[1])][key] = inc
        pending = Pending(counted=len(fresh), redelivered=redelivered)
        stream = self.backend.open_stream() if send_early else None
        try:
            self._count_tenants(pending, by_tenant, fences, states, budgets, now_ms, stream)
        except BaseException:
            if stream is not None:
                stream.abort()  # no reply of an early send is left unread on a pooled connection
            raise
        pending.stream = stream if pending.sent else None
        return pending

    def _count_tenants(
        self,
        pending: Pending,
        by_tenant: Mapping[str, Mapping[str, Mapping[int, Sequence[int]]]],
        fences: Mapping[str, Mapping[int, int]],
        states: Mapping[str, State | None],
        budgets: Sequence[Budget],
        now_ms: int,
        stream: CommitStream | None,
    ) -> None:
        by_id = {b.id: b for b in budgets}
        shapes: dict[str, _Shape] = {}
        for tenant, tenant_increments in by_tenant.items():
            new_states, decisions = self.spend.apply(tenant_increments, budgets, states, now_ms)
            commits: dict[str, TenantCommit] = {}
            for partition, offset in fences[tenant].items():
                commit = self._commit_for(commits, tenant)
                if commit.fence is not None:  # a tenant's events come from one partition; a second is a new commit
                    commit = commits[f"{tenant}\0{partition}"] = TenantCommit(tenant, self.keys.meta(tenant))
                commit.fence = (partition, self.tenants[tenant].fences.get(partition, -1), offset)
            for key, state in new_states.items():
                budget_id = key.partition("|")[0]
                shape = shapes.get(budget_id)
                if shape is None:
                    shape = shapes[budget_id] = self._shape(by_id[budget_id], now_ms)
                self._write_state(commits[tenant], key, states.get(key), state, shape, tenant_increments[key], now_ms)
            self._write_decisions(commits, decisions, now_ms)
            pending.decisions.extend(decisions)
            for commit in commits.values():
                pending.commits.append(commit)
                if stream is not None and not decisions:
                    stream.send(commit, register=commit.tenant not in self.registered)
                    pending.sent.append(commit)

    def commit(self, pending: Pending) -> CommitReport:
        """Run the commits (raises on a Redis error: nothing is cached then, and the same pending can be retried).

        Commits that :meth:`count` sent early have their replies read here, after the rest are sent on the same
        stream. If that stream broke, the retry sends everything on a new one: a commit that went through the
        first time answers with its own fence, which counts as written.
        """
        report = CommitReport()
        stream, early = pending.stream, pending.sent
        pending.stream, pending.sent = None, []  # a retry after a broken stream sends everything again
        if stream is None:
            stream, early = self.backend.open_stream(), []
        early_ids = {id(c) for c in early}
        rest = [c for c in pending.commits if id(c) not in early_ids]
        for c in rest:  # a tenant is registered before its first commit: the next owner can always find it
            stream.send(c, register=c.tenant not in self.registered)
        try:
            got = stream.finish()
        except BaseException:
            stream.abort()
            raise
        by_commit = dict(zip([id(c) for c in [*early, *rest]], got, strict=True))
        results = [by_commit[id(c)] for c in pending.commits]
        self.registered.update(c.tenant for c in pending.commits)
        for commit, fenced in zip(pending.commits, results, strict=True):
            if fenced is not None:
                report.fenced.append(commit.tenant)
                if commit.fence is not None:
                    report.fenced_partitions.add(commit.fence[0])
                self.forget_tenant(commit.tenant)
                continue
            meta = self.tenants.setdefault(commit.tenant, TenantMeta())
            if commit.fence is not None:
                partition, _, new = commit.fence
                meta.fences[partition] = max(new, meta.fences.get(partition, -1))
            for key, until in commit.standing.items():
                if until is None:
                    meta.standing.pop(key, None)
                else:
                    meta.standing[key] = until
            self._remember(commit.states)
            for key in commit.dropped:
                self.cache.pop(key, None)
        return report

    def _remember(self, states: Mapping[str, State]) -> None:
        """Cache committed states, most recent last; past ``cache_limit`` the least recently written go first.

        Evicting a tenth at a time keeps the cache nearly full and the keys in use in it: dropping it whole made
        every key miss at once (a burst of Redis reads) and freed, then re-allocated, hundreds of thousands of small
        objects. Its memory is the same either way: what a full cache holds.
        """
        cache = self.cache
        pop = cache.pop
        for key, state in states.items():
            pop(key, None)  # re-inserted at the end: dicts keep insertion order
            cache[key] = state
        over = len(cache) - self.cache_limit
        if over > 0:
            for key in list(islice(cache, max(over, self.cache_limit // 10))):
                del cache[key]

    # -- re-evaluation (budget changes, rollover) ----------------------------------------------------------------
    def reevaluate(self, budgets: Mapping[str, Budget], budget_ids: set[str] | None, now_ms: int) -> Pending:
        """Re-check members of ``budget_ids`` (None: only standing decisions that are due) at ``now_ms``.

        A changed budget applies at once to every member this process holds (cached or with a standing decision);
        a member seen neither way is evaluated at its next event, and the guard already reserves against the new
        limit meanwhile.
        """
        if budget_ids is None:
            keys = {k for meta in self.tenants.values() for k, until in meta.standing.items() if until <= now_ms}
        else:
            keys = {k for k in self.cache if split_key(k)[0] in budget_ids}
            keys |= {k for meta in self.tenants.values() for k in meta.standing if split_key(k)[0] in budget_ids}
        if not keys:
            return Pending()
        states = self._states(keys)
        pending = Pending()
        commits: dict[str, TenantCommit] = {}
        for key in sorted(keys):
            budget_id = split_key(key)[0]
            budget = budgets.get(budget_id)
            before = states.get(key)
            state, decisions = self.spend.evaluate(budget, key, before, now_ms)
            commit = self._commit_for(commits, tenant_of(split_key(key)[1]))
            if budget is None:
                commit.delete(self.keys.window(key))
                commit.dropped.append(key)
                self._standing(commit, key, before, None)
            elif state != before:
                self._write_state(commit, key, before, state, self._shape(budget, now_ms), {}, now_ms)
            pending.decisions.extend(decisions)
        self._write_decisions(commits, pending.decisions, now_ms)
        pending.commits = [c for c in commits.values() if c.ops]
        return pending

    def take_over(self, partitions: set[int]) -> int:
        """Read the metas of every registered tenant on ``partitions`` (after an assignment), so standing decisions
        are lifted at rollover and re-checked on budget changes even before the tenant's next event. Returns how
        many tenants were loaded."""
        metas = self.backend.load_meta(self.backend.registered_tenants())
        mine = {t: m for t, m in metas.items() if partitions & set(m.fences)}
        self.tenants.update(mine)
        self.registered.update(metas)
        return len(mine)

    def standing_budgets(self) -> set[str]:
        """Budget ids with a standing decision this process holds (a deleted budget's too: it must be lifted)."""
        return {split_key(k)[0] for meta in self.tenants.values() for k in meta.standing}

    def forget_tenant(self, tenant: str) -> None:
        """Drop what this process knows of a tenant (fenced, or its partition moved): read again on next use."""
        self.tenants.pop(tenant, None)
        for key in [k for k in self.cache if tenant_of(split_key(k)[1]) == tenant]:
            del self.cache[key]

    def forget_all(self) -> None:
        """A rebalance: partitions may have moved, so fences and cached windows are read again."""
        self.tenants.clear()
        self.cache.clear()

    # -- helpers -------------------------------------------------------------------------------------------------
    def _ensure_tenants(self, tenants: Iterable[str]) -> None:
        unknown = [t for t in tenants if t not in self.tenants]
        if unknown:
            self.tenants.update(self.backend.load_meta(unknown))

    def _states(self, keys: Iterable[str]) -> dict[str, State | None]:
        wanted = list(keys)
        missing = [k for k in wanted if k not in self.cache]
        loaded = self.backend.load_states(missing) if missing else {}
        return {k: self.cache[k] if k in self.cache else loaded.get(k) for k in wanted}

    def _commit_for(self, commits: dict[str, TenantCommit], tenant: str) -> TenantCommit:
        commit = commits.get(tenant)
        if commit is None:
            commit = commits[tenant] = TenantCommit(tenant, self.keys.meta(tenant))
        return commit

    def _shape(self, budget: Budget, now_ms: int) -> _Shape:
        window = self.spend.cache.window(budget.period, budget.tz, now_ms)
        length = window.end_ms - window.start_ms
        size = ROLLING[budget.period][0] if budget.period in ROLLING else length
        return _Shape(0 if budget.unit == "tokens" else 1, size, length, max(window.end_ms - now_ms, 0) + length)

    def _write_state(
        self,
        commit: TenantCommit,
        key: str,
        before: State | None,
        state: State,
        shape: _Shape,
        increments: Mapping[int, Sequence[int]],
        now_ms: int,
    ) -> None:
        budget_id, _, member = key.partition("|")
        commit.set(self.keys.tenant_window(commit.tenant, key), state_json(state), shape.state_ttl_ms)
        commit.states[key] = state
        # The guard reserves against these counters: each changed bucket is set to the exact total.
        spent_key = self.guard_keys.spent(commit.tenant, budget_id, member)
        buckets = state["b"]
        idx, size, length = shape.unit_index, shape.bucket_ms, shape.window_ms
        for start in increments:
            cell = buckets.get(str(start))
            if cell is not None:
                commit.counter(spent_key, start, int(cell[idx]), max(start + size - now_ms, 0) + length)
        if state.get("d") is not None or (before is not None and before.get("d") is not None):
            self._standing(commit, key, before, state)  # a decision stands, or stood: its meta entry moves

    def _standing(self, commit: TenantCommit, key: str, before: State | None, state: State | None) -> None:
        old = (before or {}).get("d")
        new = (state or {}).get("d")
        old_until = int(old["until_ms"]) if old else None
        new_until = int(new["until_ms"]) if new else None
        if new_until == old_until:
            return
        if new_until is None:
            commit.hdel(commit.meta_key, f"s:{key}")
        else:
            commit.hset(commit.meta_key, f"s:{key}", new_until, None)
        commit.standing[key] = new_until

    def _write_decisions(self, commits: dict[str, TenantCommit], decisions: Sequence[Decision], now_ms: int) -> None:
        for d in decisions:
            if d.type not in ("decision", "lift"):
                continue  # notify and threshold records go to the decisions topic only
            commit = self._commit_for(commits, d.tenant)
            key = self.guard_keys.decision(d.tenant, d.budget_id, d.member)
            if d.type == "decision":
                commit.set(key, d.to_json(), d.ttl_ms(now_ms))
            else:
                commit.delete(key)
