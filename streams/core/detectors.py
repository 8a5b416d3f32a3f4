"""Detectors: the leaks that dashboards miss, found per closed minute of event time.

Pure: priced events in (:meth:`Detectors.observe`), :class:`Finding` objects out (:meth:`Detectors.evaluate`),
with the caller's clock. The worker observes every batch and evaluates on a timer; the alert lifecycle turns the
reported *levels* into edges (one trigger, one resolve).

Why per closed minute of *event time*: a minute is judged once all of it has arrived (``grace_ms`` after its
end), so a slow batch cannot make a half-filled minute look like a drop, and replays judge the same minutes the
same way. Events for a minute already judged count in the oldest minute still open.

Reporting: every finding that holds is reported ``active=True`` each evaluation; a key that was active is then
reported ``active=False`` for ``clear_report_minutes`` minutes (so the lifecycle can resolve it on evidence
rather than on silence) and forgotten.

Memory is bounded: subjects (tenant × the configured dimensions), models, retried requests and sessions idle for
longer than their TTL are evicted, and retried requests and sessions are capped in number. Per-user day totals
(for the user-share detector) are kept only for tenants that have a tenant-wide daily budget and are dropped when
that day ends. Baselines are learnt in memory: after a restart a detector is silent for ``warmup_minutes``.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from costplane.budgets import Budget, WindowCache, window_for
from costplane.budgets.model import event_attrs
from costplane.reports.projection import LOOKBACK_DAYS, history_start, project
from costplane.streams.core.findings import Contributor, Finding, Severity
from costplane.streams.core.priced import PricedEvent

MINUTE_MS = 60_000
#: Days of spend kept per monthly budget member: a whole month and the projection's look-back before it.
MONTH_DAYS_KEPT = LOOKBACK_DAYS + 33
BACKLOG_PAUSE_MS = 30_000  # a backlog that pauses this long is over: the clock judges the minutes left
_ATTR = {"user": "user_id"}  # scope/dimension names that differ from the event's field names
_RANKED_METRICS = (0, 1, 3)  # what findings rank contributors by: cost, tokens, retries (see _Minute.contrib)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of every detector; the defaults are the practitioners' numbers. One per tenant if needed.

    Money is integer nano-USD, ratios are exact decimals. ``dimensions`` name UsageEvent fields (``user`` means
    ``user_id``) that, with the tenant, make the subject of the per-minute detectors.
    """

    dimensions: tuple[str, ...] = ("feature", "model")
    min_attempts: int = 20  # per subject-minute, below which ratios and spikes are not judged
    retry_ratio: Decimal = Decimal("0.05")
    min_retries: int = 10  # at ~1 % ordinary failures, 5 retries in ~100 attempts happen by chance every hour
    runaway_attempts: int = 10  # more attempts than this for one request_id
    session_turns: int = 8  # prompt grew on each of this many consecutive turns …
    session_growth: Decimal = Decimal(4)  # … to at least this multiple of the first …
    session_min_prompt_tokens: int = 20_000  # … and at least this big
    spike_factor: Decimal = Decimal(2)
    spike_sigmas: Decimal = Decimal(4)  # and this many learnt standard deviations above the baseline (noise guard)
    spike_floor_nanos: int = 100_000_000  # a cost spike needs at least $0.10 in the minute
    token_spike_floor: int = 200_000  # a tokens-per-minute spike needs at least this many tokens
    ewma_alpha: Decimal = Decimal("0.1")
    warmup_minutes: int = 10  # minutes of history before a baseline is trusted
    cache_hit_floor: Decimal = Decimal("0.5")
    cache_drop_points: Decimal = Decimal("0.15")  # and at least this far below the usual rate
    cache_min_prompt_tokens: int = 50_000  # per subject-minute (small samples swing by tens of points)
    user_share: Decimal = Decimal("0.01")  # of the tenant's daily budget
    user_share_users: int = 10_000  # the biggest spenders tracked per tenant and day (at most twice this many)
    forecast_min_elapsed_ms: int = 86_400_000  # no month forecast before a day of the month has passed
    price_mismatch_ratio: Decimal = Decimal("0.05")  # billed differs from computed by at least this share …
    price_mismatch_minutes: int = 60  # … over the events of this many recent minutes …
    price_mismatch_min_events: int = 20  # … that carry a provider-billed cost, at least this many
    clear_report_minutes: int = 10
    idle_evict_minutes: int = 60
    request_ttl_ms: int = 600_000
    session_ttl_ms: int = 3_600_000
    max_requests: int = 100_000
    max_sessions: int = 100_000
    grace_ms: int = 5_000
    top_contributors: int = 5
    #: The biggest contributors kept per subject and minute by each ranking (cost, tokens, retries); at most four
    #: times this many are held, so a minute with a million users costs the same memory as one with a thousand.
    contributors_tracked: int = 200

    def __post_init__(self) -> None:
        if self.user_share_users < 1:
            raise ValueError("user_share_users must be >= 1")
        if self.top_contributors < 0:  # a minute's trim keeps the top N of each ranking: N must be a count
            raise ValueError("top_contributors must be >= 0")
        if self.contributors_tracked < self.top_contributors:
            raise ValueError("contributors_tracked must be >= top_contributors")
        if self.min_attempts < 1 or self.runaway_attempts < 1 or self.session_turns < 2:
            raise ValueError("min_attempts and runaway_attempts must be >= 1, session_turns >= 2")
        if not 0 < self.ewma_alpha <= 1 or self.spike_factor <= 1:
            raise ValueError("ewma_alpha must be in (0, 1] and spike_factor > 1")
        if min(self.grace_ms, self.clear_report_minutes, self.idle_evict_minutes, self.warmup_minutes) < 0:
            raise ValueError("times must be >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """Overrides from settings or a per-tenant YAML block (decimals as strings, dimensions as a list)."""
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name not in cls.__dataclass_fields__:
                raise ValueError(f"unknown detector setting {name!r}")
            default = getattr(cls(), name)
            if isinstance(default, Decimal):
                kwargs[name] = Decimal(str(value))
            elif isinstance(default, tuple):
                kwargs[name] = tuple(str(v) for v in value)
            else:
                kwargs[name] = int(value)
        return cls(**kwargs)


def _usd(nanos: int) -> str:
    return str(Decimal(nanos).scaleb(-9))


def _ratio(num: int, den: int) -> str:
    return str((Decimal(num) / Decimal(den)).quantize(Decimal("0.0001"))) if den else "0"


def _tokens(p: PricedEvent) -> int:
    e = p.event
    return int(e.input_tokens + e.cached_input_tokens + e.cache_write_tokens + e.output_tokens + e.reasoning_tokens)


def _prompt(p: PricedEvent) -> int:
    e = p.event
    return int(e.input_tokens + e.cached_input_tokens + e.cache_write_tokens)


def _ewma(old: int, value: int, alpha: Fraction) -> int:
    return old + round((value - old) * alpha)


def _learn(base: _Baseline, value: int, cfg: DetectorConfig, spiking: bool) -> None:
    """Move the level and its variance toward ``value`` (integer EWMA, deterministic).

    During warm-up the plain running mean (weight 1/n) is used, so a young baseline is not biased toward zero.
    While spiking, the level learns at a fifth of the rate (a lasting step becomes the new normal in tens of
    minutes) and the variance not at all (an incident is not noise).
    """
    alpha = Fraction(cfg.ewma_alpha)
    if base.minutes < cfg.warmup_minutes:
        alpha = max(alpha, Fraction(1, base.minutes + 1))
    deviation = value - base.level
    if spiking:
        alpha /= 5
    else:
        base.var = _ewma(base.var, deviation * deviation, alpha)
    base.level = _ewma(base.level, value, alpha)
    base.minutes += 1


def _spiking(base: _Baseline, value: int, floor: int, cfg: DetectorConfig) -> bool:
    """Above the floor, above ``spike_factor`` × the level, and ``spike_sigmas`` deviations above it."""
    if value < floor or value <= Fraction(cfg.spike_factor) * base.level:
        return False
    return Fraction(value - base.level) ** 2 > Fraction(cfg.spike_sigmas) ** 2 * base.var


def _contributor_bounds(data: _Minute) -> dict[str, str]:
    """The finding numbers saying how far each contributor figure may be overstated (none while all are exact)."""
    floor = data.floor
    if not any(floor):
        return {}
    return {
        "contributors_cost_nanos_over_by_at_most": str(floor[0]),
        "contributors_tokens_over_by_at_most": str(floor[1]),
        "contributors_attempts_over_by_at_most": str(floor[2]),
    }


@dataclass(slots=True)
class _Minute:
    """One subject's counts in one minute (all integers, so sums are exact)."""

    attempts: int = 0
    retries: int = 0
    failed: int = 0
    failed_tokens: int = 0
    failed_nanos: int = 0
    tokens: int = 0
    nanos: int = 0
    cached: int = 0
    prompt: int = 0
    # (dimension, value) -> [nanos, tokens, attempts, retries]
    contrib: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: Per metric, the most a contributor dropped from ``contrib`` had; a newcomer starts there (see shrink). All
    #: zero while nothing was dropped, and then every figure is exact.
    floor: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add(self, p: PricedEvent, contrib_dims: Sequence[str], tracked: int) -> None:
        e = p.event
        tokens = _tokens(p)
        retry = 1 if e.attempt > 1 else 0
        self.attempts += 1
        self.retries += retry
        if e.status != "ok":
            self.failed += 1
            self.failed_tokens += tokens
            self.failed_nanos += p.cost_nanos
        self.tokens += tokens
        self.nanos += p.cost_nanos
        self.cached += e.cached_input_tokens
        self.prompt += _prompt(p)
        for dim in contrib_dims:
            value = getattr(e, _ATTR.get(dim, dim), None)
            if value is None:
                continue
            key = (dim, str(value))
            cell = self.contrib.get(key)
            if cell is None:
                if len(self.contrib) >= 4 * tracked:
                    self.shrink(tracked)  # before the newcomer joins (it starts at the floor)
                cell = self.contrib[key] = self.floor[:]
            cell[0] += p.cost_nanos
            cell[1] += tokens
            cell[2] += 1
            cell[3] += retry

    def shrink(self, keep: int) -> None:
        """Keep the ``keep`` biggest contributors by cost, by tokens and by retries; forget the rest.

        Why: the findings name the top few, and a busy subject's minute has one contributor per user — a minute
        of fresh users held hundreds of thousands of entries only to drop them when it closed (most of the worker's
        memory swing). This is Space-Saving (Metwally et al.) trimmed in batches: ``floor`` is, per metric, the
        most any dropped contributor had, and a contributor (re)entering starts at ``floor``. So every figure held
        is at least the true one and over it by at most ``floor``, and anyone not held had at most ``floor``:
        a contributor dropped again and again (a client making many cheap calls among fresh users) keeps its
        total and rises into the top instead of vanishing. Findings report the floors beside the contributors.
        """
        kept: set[tuple[str, str]] = set()
        for metric in _RANKED_METRICS:
            # What heapq.nlargest returns (ties in insertion order: its documented equivalent), in half the time:
            # fresh users make this the detectors' biggest single cost.
            ranked = sorted(self.contrib.items(), key=lambda kv: kv[1][metric], reverse=True)[:keep]
            kept.update(k for k, cell in ranked if cell[metric] > 0)  # a zero ranks nobody (no retries, say)
        floor = self.floor
        for key in [k for k in self.contrib if k not in kept]:
            cell = self.contrib.pop(key)
            for metric in range(4):
                if cell[metric] > floor[metric]:
                    floor[metric] = cell[metric]


@dataclass(slots=True)
class _Baseline:
    """A learnt per-minute level (EWMA, integer) and how many minutes fed it."""

    level: int = 0
    var: int = 0  # EWMA of the squared deviation from the level (so noisy, small subjects need a bigger jump)
    minutes: int = 0
    last_seen: int = 0  # minute start of the last minute with traffic


@dataclass(slots=True)
class _CacheBaseline:
    rate: Fraction = Fraction(0)
    minutes: int = 0


@dataclass(slots=True)
class _Request:
    tenant: str
    subject: dict[str, str]
    attempts: int
    max_attempt: int
    nanos: int
    tokens: int
    user: str | None
    last_ms: int


@dataclass(slots=True)
class _Session:
    tenant: str
    user: str | None
    feature: str | None
    last_turn: int
    prompts: list[int]
    last_ms: int


@dataclass(slots=True)
class _UserDay:
    window_start: int
    window_end: int
    budget: Budget
    threshold: Fraction  # the spend above which a user is reported
    users: dict[str, list[int]] = field(default_factory=dict)  # user -> [nanos, tokens]
    over: set[str] = field(default_factory=set)
    #: The most a user dropped from ``users`` had, [nanos, tokens]; a newcomer starts there (see shrink).
    floor: list[int] = field(default_factory=lambda: [0, 0])

    def shrink(self, keep: int) -> None:
        """Keep the ``keep`` biggest spenders (and every user already over the share); forget the rest.

        Why: a tenant with a million users a day would otherwise hold a million entries until midnight. Only users
        near the share matter. As in :meth:`_Minute.shrink` (Space-Saving), a user (re)entering starts at
        ``floor``, the most any dropped user had: a figure held is at least the user's true spend and over it by
        at most ``floor`` — which grows about as the day's spend divided by ``keep``, so a sliver of the share
        while that spend stays well below ``keep`` × share × the limit — and no user who crosses the share can be
        missed, however often it was dropped before.
        """
        idx = 0 if self.budget.unit == "usd" else 1
        ranked = sorted(self.users.items(), key=lambda item: item[1][idx], reverse=True)
        floor = self.floor
        for user, cell in ranked[keep:]:
            if user not in self.over:
                del self.users[user]
                floor[0], floor[1] = max(floor[0], cell[0]), max(floor[1], cell[1])


class Detectors:
    """All detectors of one worker over the events it observes (its partitions' tenants).

    ``configs`` overrides the default :class:`DetectorConfig` per tenant. ``budgets`` (also via
    :meth:`set_budgets`) feed the user-share and forecast detectors.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        configs: Mapping[str, DetectorConfig] | None = None,
        budgets: Iterable[Budget] = (),
    ) -> None:
        self._default = config or DetectorConfig()
        self._configs = dict(configs or {})
        self._open: dict[int, dict[tuple[str, ...], _Minute]] = {}
        self._open_models: dict[int, dict[tuple[str, str], list[int]]] = {}  # (tenant, model) -> [tokens, attempts]
        self._open_unpriced: dict[int, dict[tuple[str, str, str], int]] = {}
        #: minute -> (tenant, provider, model) -> [billed, computed, events] of events carrying a billed cost
        self._open_billed: dict[int, dict[tuple[str, str, str], list[int]]] = {}
        self._billed: dict[tuple[str, str, str], deque[tuple[int, int, int, int]]] = {}  # recent judged minutes
        self._closed_until = 0  # start of the first minute not yet judged
        self._watermark = 0  # the latest batch's 90th-percentile event time (see observe)
        self._observed = False  # events arrived since the last evaluation
        self._traffic_at = -BACKLOG_PAUSE_MS - 1  # the clock of the last evaluation that found new events
        self._subjects: dict[tuple[str, ...], _Baseline] = {}
        self._cache: dict[tuple[str, ...], _CacheBaseline] = {}
        self._models: dict[tuple[str, str], _Baseline] = {}
        self._requests: OrderedDict[tuple[str, str], _Request] = OrderedDict()
        self._sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        self._user_days: dict[str, _UserDay] = {}
        # (budget id, member) -> {local day start ms: spent}: the month so far and the look-back before it
        self._month: dict[tuple[str, str], dict[int, int]] = {}
        self._recent: dict[str, tuple[Finding, int]] = {}  # dedup key -> (last active finding, its minute)
        self._cleared: set[str] = set()  # recent keys already reported inactive at least once
        self._budgets: list[Budget] = []
        self._windows = WindowCache()
        self._dims: dict[str, tuple[tuple[str, ...], list[str]]] = {}  # tenant -> (event fields, contributor dims)
        self.set_budgets(budgets)

    # -- configuration ---------------------------------------------------------------------------------------
    def config_for(self, tenant: str) -> DetectorConfig:
        return self._configs.get(tenant, self._default)

    def set_config(self, tenant: str, config: DetectorConfig | None) -> None:
        """Set (or with None, reset to the default) one tenant's thresholds; applies from the next minute."""
        if config is None:
            self._configs.pop(tenant, None)
        else:
            self._configs[tenant] = config
        self._dims.pop(tenant, None)

    def set_budgets(self, budgets: Iterable[Budget]) -> None:
        """Replace the budgets (the worker calls this on every budgets-topic change)."""
        self._budgets = list(budgets)
        keep = {b.id for b in self._budgets if b.period == "month"}
        for key in [k for k in self._month if k[0] not in keep]:
            del self._month[key]
        daily = self._tenant_daily_budgets()
        for tenant in [t for t, d in self._user_days.items() if daily.get(t) != d.budget]:
            del self._user_days[tenant]

    def seed_month_spend(self, budget_id: str, member: str, spent: int, at_ms: int) -> None:
        """Start a monthly budget's month-to-date from a total known without its days (e.g. the worker's window
        counter): spread evenly over the month's days before ``at_ms``'s day (the remainder on the first), which is
        the linear run rate a total alone implies; replaces what was counted for the member."""
        budget = next((b for b in self._budgets if b.id == budget_id), None)
        if budget is None or budget.period != "month":
            return
        month = window_for("month", budget.tz, at_ms)
        days: list[int] = []
        day = window_for("day", budget.tz, month.start_ms)
        today = window_for("day", budget.tz, at_ms).start_ms
        while day.start_ms < today:
            days.append(day.start_ms)
            day = window_for("day", budget.tz, day.end_ms)
        if not days:
            self._month[(budget_id, member)] = {today: int(spent)}
            return
        share, rest = divmod(int(spent), len(days))
        self._month[(budget_id, member)] = {d: share + (rest if i == 0 else 0) for i, d in enumerate(days)}

    def _tenant_daily_budgets(self) -> dict[str, Budget]:
        """The tenant-wide daily budget of each tenant (scope = exactly the tenant; the smallest if several)."""
        out: dict[str, Budget] = {}
        for b in self._budgets:
            tenant = b.scope.get("tenant", "*")
            if b.period != "day" or set(b.scope) != {"tenant"} or tenant == "*":
                continue
            if tenant not in out or (b.unit, b.limit) < (out[tenant].unit, out[tenant].limit):
                out[tenant] = b
        return out

    # -- observing -------------------------------------------------------------------------------------------
    def observe(self, events: Iterable[PricedEvent]) -> None:
        """Count a batch of priced events (the worker calls this once per batch, after pricing)."""
        daily = self._tenant_daily_budgets()
        month_budgets = [b for b in self._budgets if b.period == "month" and "*" not in b.scope.values()]
        times: list[int] = []
        for p in events:
            e = p.event
            cfg = self.config_for(e.tenant)
            times.append(e.occurred_at)
            self._observed = True
            minute = max(e.occurred_at // MINUTE_MS * MINUTE_MS, self._closed_until)
            dims = self._dims.get(e.tenant)
            if dims is None:
                dims = self._dims[e.tenant] = (
                    tuple(_ATTR.get(d, d) for d in cfg.dimensions),
                    [d for d in ("user", "feature", "model") if d not in cfg.dimensions],
                )
            fields, contrib_dims = dims
            subject = (e.tenant, *(str(getattr(e, f, None) or "-") for f in fields))
            subjects = self._open.get(minute)
            if subjects is None:
                subjects = self._open[minute] = {}
            data = subjects.get(subject)
            if data is None:
                data = subjects[subject] = _Minute()
            data.add(p, contrib_dims, cfg.contributors_tracked)
            cell = self._open_models.setdefault(minute, {}).setdefault((e.tenant, e.model), [0, 0])
            cell[0] += _tokens(p)
            cell[1] += 1
            if p.unpriced:
                bucket = self._open_unpriced.setdefault(minute, {})
                key = (e.tenant, e.provider, e.model)
                bucket[key] = bucket.get(key, 0) + 1
            elif e.billed_cost_nanos is not None:
                sums = self._open_billed.setdefault(minute, {}).setdefault((e.tenant, e.provider, e.model), [0, 0, 0])
                sums[0] += e.billed_cost_nanos
                sums[1] += p.cost_nanos
                sums[2] += 1
            if e.attempt > 1:
                self._observe_retry(p, cfg)
            if e.session_id is not None and e.turn is not None and e.attempt == 1:
                self._observe_session(p, cfg)
            if e.tenant in daily and e.user_id is not None:
                self._observe_user_day(p, daily[e.tenant], cfg)
            if month_budgets:
                self._observe_month(p, month_budgets)
        if times:
            # The batch's 90th percentile, not its latest: during a replay the watermark closes minutes, and a few
            # events from clients whose clocks run minutes ahead (within the skew bound) would close minutes the
            # backlog has not reached yet, folding the rest of their traffic into a later minute. Not the median
            # either: live traffic with a late majority (a publisher draining its spool) would look like a backlog.
            times.sort()
            self._watermark = max(self._watermark, times[(len(times) - 1) * 9 // 10])

    def _observe_retry(self, p: PricedEvent, cfg: DetectorConfig) -> None:
        """Only retried requests are tracked: a first attempt alone can never be a runaway."""
        e = p.event
        key = (e.tenant, e.request_id)
        req = self._requests.get(key)
        if req is None:
            subject = {d: str(getattr(e, _ATTR.get(d, d), None) or "-") for d in cfg.dimensions}
            req = _Request(e.tenant, subject, 1, 1, 0, 0, e.user_id, e.occurred_at)  # attempt 1 was seen or not
            self._requests[key] = req
        req.attempts += 1
        req.max_attempt = max(req.max_attempt, e.attempt)
        req.nanos += p.cost_nanos
        req.tokens += _tokens(p)
        req.last_ms = max(req.last_ms, e.occurred_at)
        self._requests.move_to_end(key)
        while len(self._requests) > cfg.max_requests:
            self._requests.popitem(last=False)

    def _observe_session(self, p: PricedEvent, cfg: DetectorConfig) -> None:
        e = p.event
        assert e.session_id is not None and e.turn is not None
        key = (e.tenant, e.session_id)
        prompt = _prompt(p)
        s = self._sessions.get(key)
        if s is None:
            s = _Session(e.tenant, e.user_id, e.feature, e.turn, [prompt], e.occurred_at)
            self._sessions[key] = s
        elif e.turn > s.last_turn:
            s.prompts = (s.prompts + [prompt])[-cfg.session_turns :] if prompt > s.prompts[-1] else [prompt]
            s.last_turn = e.turn
        s.last_ms = max(s.last_ms, e.occurred_at)
        self._sessions.move_to_end(key)
        while len(self._sessions) > cfg.max_sessions:
            self._sessions.popitem(last=False)

    def _observe_user_day(self, p: PricedEvent, budget: Budget, cfg: DetectorConfig) -> None:
        e = p.event
        assert e.user_id is not None
        day = self._user_days.get(e.tenant)
        if day is None or not day.window_start <= e.occurred_at < day.window_end or day.budget is not budget:
            w = self._windows.window("day", budget.tz, e.occurred_at)
            if day is not None and w.start_ms < day.window_start:
                return  # a late event of a day already over: that day's shares are no longer reported
            day = _UserDay(w.start_ms, w.end_ms, budget, Fraction(cfg.user_share) * budget.limit)
            self._user_days[e.tenant] = day
        cell = day.users.get(e.user_id)
        if cell is None:
            if len(day.users) >= 2 * cfg.user_share_users:
                day.shrink(cfg.user_share_users)  # before the newcomer joins (it starts at the floor)
            cell = day.users[e.user_id] = day.floor[:]
        cell[0] += p.cost_nanos
        cell[1] += _tokens(p)
        if (cell[0] if budget.unit == "usd" else cell[1]) > day.threshold:
            day.over.add(e.user_id)

    def _observe_month(self, p: PricedEvent, budgets: Sequence[Budget]) -> None:
        """Spend per member and local day: the month so far and, for the run rate, the days before it (trimmed to
        the projection's look-back when judged)."""
        attrs = event_attrs(p.event)
        for b in budgets:
            member = b.member_of(attrs)
            if member is None:
                continue
            day = self._windows.window("day", b.tz, p.event.occurred_at).start_ms
            cell = self._month.setdefault((b.id, member), {})
            if day not in cell:
                cell[day] = 0
                while len(cell) > MONTH_DAYS_KEPT:  # a new day (once a day per member): drop the oldest
                    del cell[min(cell)]
            cell[day] += p.cost_nanos if b.unit == "usd" else _tokens(p)

    # -- evaluating ------------------------------------------------------------------------------------------
    def evaluate(self, now_ms: int) -> list[Finding]:
        """Judge every minute that is complete; return their findings (see :meth:`evaluate_minutes`)."""
        return [f for _, findings in self.evaluate_minutes(now_ms) for f in findings]

    def evaluate_minutes(self, now_ms: int) -> list[tuple[int, list[Finding]]]:
        """Judge every minute that is complete; return ``(minute start, its findings)`` in minute order.

        Per minute, so the caller can run the alert lifecycle on event time (the end of each judged minute): a
        replayed backlog then resolves and cools down minute by minute, as it did live, and yields the same
        alert ids. Findings are active ones, and clearing ones for recent keys.

        A minute is complete when it ended ``grace_ms`` before ``now_ms``. While the worker catches up on a
        backlog (events arrived within the last ``BACKLOG_PAUSE_MS`` but the watermark — the highest 90th
        percentile of a batch's event times — is more than two minutes behind ``now_ms``) the event time decides
        instead, so a replay is judged minute by minute as it advances.
        A short pause in the backlog (a rebalance, a slow batch, an evaluation between two batches) is not the end
        of it: judging by the clock then would close every open minute at once, half-filled ones included. Minutes
        without any traffic are judged too (as zero, up to the last hour of them), so conditions clear and
        baselines decay when traffic stops.
        """
        grace = self._default.grace_ms
        horizon = now_ms - grace
        if self._observed:
            self._traffic_at = now_ms
            self._observed = False
        if now_ms - self._watermark > 2 * MINUTE_MS and now_ms - self._traffic_at <= BACKLOG_PAUSE_MS:
            horizon = self._watermark
        last = horizon // MINUTE_MS * MINUTE_MS - MINUTE_MS  # start of the last complete minute
        first = self._closed_until or min(self._open, default=None)
        if first is None or last < first:
            return []
        due = sorted(
            {m for m in self._open if m <= last} | set(range(max(first, last - 59 * MINUTE_MS), last + 1, MINUTE_MS))
        )
        judged: list[tuple[int, list[Finding]]] = []
        for minute in due:
            judged.append((minute, self._judge_minute(minute)))
            self._closed_until = max(self._closed_until, minute + MINUTE_MS)
        return judged

    def _judge_minute(self, minute: int) -> list[Finding]:
        subjects = self._open.pop(minute, {})
        models = self._open_models.pop(minute, {})
        unpriced = self._open_unpriced.pop(minute, {})
        end = minute + MINUTE_MS
        current: list[Finding] = []
        for subject in set(subjects) | set(self._subjects):
            current.extend(self._judge_subject(subject, subjects.get(subject), minute))
        for key in set(models) | set(self._models):
            current.extend(self._judge_model(key, models.get(key), minute))
        for (tenant, provider, model), count in unpriced.items():
            current.append(
                self._finding(
                    "unpriced_model",
                    tenant,
                    {"provider": provider, "model": model},
                    True,
                    "warning",
                    f"{count} attempts of {provider}/{model} had no price: their spend is counted as $0",
                    minute,
                    end,
                    {"attempts": str(count)},
                    (),
                    "Add the model to the price catalog (costplane prices import, or an override), then re-rate the "
                    "window.",
                )
            )
        current.extend(self._judge_billing(self._open_billed.pop(minute, {}), minute))
        current.extend(self._judge_requests(minute))
        current.extend(self._judge_sessions(minute))
        current.extend(self._judge_user_share(minute))
        current.extend(self._judge_forecasts(minute))
        self._evict(minute)
        return self._with_clearing(current, minute)

    def _with_clearing(self, current: list[Finding], minute: int) -> list[Finding]:
        """Report active findings, plus inactive ones for keys active in the last ``clear_report_minutes``.

        A key that was active is reported inactive at least once (even after a long gap) and then until
        ``clear_report_minutes`` have passed since it was last active; then it is forgotten.
        """
        out: list[Finding] = []
        inactive: dict[str, Finding] = {}
        for f in current:
            if f.active:
                self._recent[f.dedup_key] = (f, minute)
                self._cleared.discard(f.dedup_key)
                out.append(f)
            elif f.dedup_key in self._recent:
                inactive[f.dedup_key] = f
        for key, (last, at) in list(self._recent.items()):
            if at == minute:
                continue
            if at < minute - self.config_for(last.tenant).clear_report_minutes * MINUTE_MS and key in self._cleared:
                del self._recent[key]
                self._cleared.discard(key)
                continue
            self._cleared.add(key)
            out.append(
                inactive.get(key)
                or replace(
                    last,
                    active=False,
                    window_start_ms=minute,
                    window_end_ms=minute + MINUTE_MS,
                    summary=f"cleared: {last.summary}",
                )
            )
        return out

    def _judge_subject(self, subject: tuple[str, ...], m: _Minute | None, minute: int) -> list[Finding]:
        tenant = subject[0]
        cfg = self.config_for(tenant)
        labels = dict(zip(cfg.dimensions, subject[1:], strict=False))
        end = minute + MINUTE_MS
        data = m or _Minute()
        out: list[Finding] = []
        if data.attempts >= cfg.min_attempts:
            ratio = Fraction(data.retries, data.attempts)
            active = ratio > Fraction(cfg.retry_ratio) and data.retries >= cfg.min_retries
            severity: Severity = "critical" if ratio > 4 * Fraction(cfg.retry_ratio) else "warning"
            out.append(
                self._finding(
                    "retry_storm",
                    tenant,
                    labels,
                    active,
                    severity,
                    f"{_ratio(data.retries, data.attempts)} of {data.attempts} attempts were retries; failed attempts "
                    f"cost ${_usd(data.failed_nanos)}",
                    minute,
                    end,
                    {
                        "attempts": str(data.attempts),
                        "retries": str(data.retries),
                        "retry_ratio": _ratio(data.retries, data.attempts),
                        "threshold": str(cfg.retry_ratio),
                        "failed_attempts": str(data.failed),
                        "wasted_tokens": str(data.failed_tokens),
                        "wasted_cost_nanos": str(data.failed_nanos),
                        "wasted_usd": _usd(data.failed_nanos),
                        **_contributor_bounds(data),
                    },
                    self._top(data, 3, cfg),
                    "Check the provider status and the failing statuses; cap retries with backoff and jitter.",
                )
            )
        base = self._subjects.get(subject)
        if base is None:
            if m is None:
                return out
            base = self._subjects[subject] = _Baseline(last_seen=minute)
        spiking = False
        if base.minutes >= cfg.warmup_minutes:
            spiking = _spiking(base, data.nanos, cfg.spike_floor_nanos, cfg)
            if spiking or self._was_active("cost_spike", tenant, labels):
                factor = _ratio(data.nanos, base.level) if base.level else "inf"
                out.append(
                    self._finding(
                        "cost_spike",
                        tenant,
                        labels,
                        spiking,
                        "critical" if data.nanos > 5 * base.level else "warning",
                        f"${_usd(data.nanos)} in a minute, {factor}× the usual ${_usd(base.level)}",
                        minute,
                        end,
                        {
                            "cost_nanos": str(data.nanos),
                            "cost_usd": _usd(data.nanos),
                            "baseline_nanos": str(base.level),
                            "baseline_usd": _usd(base.level),
                            "factor": factor,
                            "baseline_stddev_usd": _usd(math.isqrt(base.var)),
                            "threshold_factor": str(cfg.spike_factor),
                            "floor_usd": _usd(cfg.spike_floor_nanos),
                            "attempts": str(data.attempts),
                            "tokens": str(data.tokens),
                            **_contributor_bounds(data),
                        },
                        self._top(data, 0, cfg),
                        "Find the top contributor; set or lower a budget with action degrade or block for it.",
                    )
                )
        _learn(base, data.nanos, cfg, spiking)
        if m is not None:
            base.last_seen = minute
        out.extend(self._judge_cache(subject, labels, data, minute, cfg))
        return out

    def _judge_cache(
        self, subject: tuple[str, ...], labels: dict[str, str], data: _Minute, minute: int, cfg: DetectorConfig
    ) -> list[Finding]:
        if data.prompt < cfg.cache_min_prompt_tokens:
            return []
        rate = Fraction(data.cached, data.prompt)
        base = self._cache.setdefault(subject, _CacheBaseline(rate=rate))
        floor = Fraction(cfg.cache_hit_floor)
        out: list[Finding] = []
        active = False
        if base.minutes >= cfg.warmup_minutes and base.rate >= floor:
            active = rate < floor and base.rate - rate >= Fraction(cfg.cache_drop_points)
            out.append(
                self._finding(
                    "cache_hit_drop",
                    subject[0],
                    labels,
                    active,
                    "warning",
                    f"prompt-cache hit rate {float(rate):.1%} (usually {float(base.rate):.1%})",
                    minute,
                    minute + MINUTE_MS,
                    {
                        "hit_rate": f"{Decimal(rate.numerator) / Decimal(rate.denominator):.4f}",
                        "baseline_hit_rate": f"{Decimal(base.rate.numerator) / Decimal(base.rate.denominator):.4f}",
                        "cached_tokens": str(data.cached),
                        "prompt_tokens": str(data.prompt),
                        "floor": str(cfg.cache_hit_floor),
                        "cost_nanos": str(data.nanos),
                        **_contributor_bounds(data),
                    },
                    self._top(data, 1, cfg),
                    "Look for a change that moved variable content before the cached prefix (timestamps, ids, "
                    "reordered tools) and restore a stable prefix.",
                )
            )
        if not active:  # the usual rate is learnt from normal minutes only
            alpha = Fraction(cfg.ewma_alpha)
            if base.minutes < cfg.warmup_minutes:
                alpha = max(alpha, Fraction(1, base.minutes + 1))
            base.rate = base.rate + (rate - base.rate) * alpha
            base.rate = base.rate.limit_denominator(1_000_000)
        base.minutes += 1
        return out

    def _judge_model(self, key: tuple[str, str], cell: list[int] | None, minute: int) -> list[Finding]:
        tenant, model = key
        cfg = self.config_for(tenant)
        tokens = cell[0] if cell else 0
        base = self._models.get(key)
        if base is None:
            if cell is None:
                return []
            base = self._models[key] = _Baseline(last_seen=minute)
        out: list[Finding] = []
        spiking = False
        labels = {"model": model}
        if base.minutes >= cfg.warmup_minutes:
            spiking = _spiking(base, tokens, cfg.token_spike_floor, cfg)
            if spiking or self._was_active("token_spike", tenant, labels):
                factor = _ratio(tokens, base.level) if base.level else "inf"
                out.append(
                    self._finding(
                        "token_spike",
                        tenant,
                        labels,
                        spiking,
                        "warning",
                        f"{tokens} tokens in a minute on {model}, {factor}× the usual {base.level}",
                        minute,
                        minute + MINUTE_MS,
                        {
                            "tokens": str(tokens),
                            "baseline_tokens": str(base.level),
                            "factor": factor,
                            "threshold_factor": str(cfg.spike_factor),
                            "attempts": str(cell[1] if cell else 0),
                        },
                        (),
                        "Check which feature drives the model's volume; watch the provider's tokens-per-minute limit.",
                    )
                )
        _learn(base, tokens, cfg, spiking)
        if cell is not None:
            base.last_seen = minute
        return out

    def _judge_billing(self, cells: Mapping[tuple[str, str, str], list[int]], minute: int) -> list[Finding]:
        """price_mismatch: over the recent minutes, the provider billed these events a share more (or less) than
        the catalog prices them — a wrong or stale catalog entry, found by the money."""
        out: list[Finding] = []
        for key, (billed, computed, events) in cells.items():
            self._billed.setdefault(key, deque()).append((minute, billed, computed, events))
        for key in list(self._billed):
            tenant, provider, model = key
            cfg = self.config_for(tenant)
            window = self._billed[key]
            while window and window[0][0] <= minute - cfg.price_mismatch_minutes * MINUTE_MS:
                window.popleft()
            labels = {"provider": provider, "model": model}
            if not window:
                del self._billed[key]
                if self._was_active("price_mismatch", tenant, labels):
                    out.append(self._billing_finding(tenant, labels, False, 0, 0, 0, minute, cfg))
                continue
            billed = sum(c[1] for c in window)
            computed = sum(c[2] for c in window)
            events = sum(c[3] for c in window)
            active = (
                events >= cfg.price_mismatch_min_events
                and computed > 0
                and abs(billed - computed) >= cfg.price_mismatch_ratio * computed
            )
            if active or self._was_active("price_mismatch", tenant, labels):
                out.append(self._billing_finding(tenant, labels, active, billed, computed, events, minute, cfg))
        return out

    def _billing_finding(
        self,
        tenant: str,
        labels: dict[str, str],
        active: bool,
        billed: int,
        computed: int,
        events: int,
        minute: int,
        cfg: DetectorConfig,
    ) -> Finding:
        gap = _ratio(billed - computed, computed) if computed else "n/a"
        return self._finding(
            "price_mismatch",
            tenant,
            labels,
            active,
            "warning",
            f"{labels['provider']}/{labels['model']}: billed {_usd(billed)} for {events} events the catalog prices at "
            f"{_usd(computed)} ({gap} difference)",
            minute - (cfg.price_mismatch_minutes - 1) * MINUTE_MS,
            minute + MINUTE_MS,
            {
                "billed_nanos": str(billed),
                "computed_nanos": str(computed),
                "events": str(events),
                "difference": gap,
                "threshold": str(cfg.price_mismatch_ratio),
            },
            (),
            "Compare the model's catalog entry with the provider's price list (costplane prices show MODEL); fix it "
            "with an override or a new catalog, then re-rate the range (costplane rerate).",
        )

    def _judge_requests(self, minute: int) -> list[Finding]:
        out: list[Finding] = []
        end = minute + MINUTE_MS
        for (tenant, request_id), req in self._requests.items():
            cfg = self.config_for(tenant)
            attempts = max(req.attempts, req.max_attempt)
            if attempts <= cfg.runaway_attempts or not minute <= req.last_ms < end:
                continue
            out.append(
                self._finding(
                    "runaway_loop",
                    tenant,
                    {**req.subject, "request_id": request_id},
                    True,
                    "critical",
                    f"request {request_id} made {attempts} attempts (limit {cfg.runaway_attempts})",
                    minute,
                    end,
                    {
                        "attempts": str(attempts),
                        "limit": str(cfg.runaway_attempts),
                        "retry_cost_nanos": str(req.nanos),
                        "retry_cost_usd": _usd(req.nanos),
                        "retry_tokens": str(req.tokens),
                    },
                    (Contributor("user_id", req.user, req.nanos, req.tokens, attempts),) if req.user else (),
                    "Cap attempts per request in the client and stop retrying deterministic failures.",
                )
            )
        return out

    def _judge_sessions(self, minute: int) -> list[Finding]:
        out: list[Finding] = []
        end = minute + MINUTE_MS
        for (tenant, session_id), s in self._sessions.items():
            cfg = self.config_for(tenant)
            if len(s.prompts) < cfg.session_turns or not minute <= s.last_ms < end:
                continue
            first, last = s.prompts[0], s.prompts[-1]
            if last < cfg.session_min_prompt_tokens or last < Fraction(cfg.session_growth) * first:
                continue
            subject = {"session_id": session_id} | ({"feature": s.feature} if s.feature else {})
            out.append(
                self._finding(
                    "runaway_loop",
                    tenant,
                    subject,
                    True,
                    "warning",
                    f"session {session_id}: the prompt grew on {len(s.prompts)} turns in a row, "
                    f"{first} → {last} tokens",
                    minute,
                    end,
                    {
                        "turn": str(s.last_turn),
                        "turns_growing": str(len(s.prompts)),
                        "first_prompt_tokens": str(first),
                        "last_prompt_tokens": str(last),
                        "growth": _ratio(last, first),
                    },
                    (Contributor("user_id", s.user),) if s.user else (),
                    "Bound the conversation history (truncate or summarise old turns) and cap turns per session.",
                )
            )
        return out

    def _judge_user_share(self, minute: int) -> list[Finding]:
        out: list[Finding] = []
        for tenant, day in self._user_days.items():
            if minute >= day.window_end:
                continue  # the day is over; its users clear through the reporting of recent keys
            cfg = self.config_for(tenant)
            b = day.budget
            for user in sorted(day.over):
                nanos, tokens = day.users[user]
                spent = nanos if b.unit == "usd" else tokens
                out.append(
                    self._finding(
                        "user_share",
                        tenant,
                        {"user_id": user},
                        True,
                        "warning",
                        f"user {user} used {_ratio(spent * 100, b.limit)} % of the tenant's daily budget {b.id}",
                        day.window_start,
                        day.window_end,
                        {
                            "spent": str(spent),
                            "unit": b.unit,
                            "limit": str(b.limit),
                            "share": _ratio(spent, b.limit),
                            "threshold": str(cfg.user_share),
                            "budget_id": b.id,
                            "cost_usd": _usd(nanos),
                            "tokens": str(tokens),
                            **(
                                {"overstated_by_at_most": str(day.floor[0 if b.unit == "usd" else 1])}
                                if any(day.floor)
                                else {}
                            ),
                        },
                        (Contributor("user_id", user, nanos, tokens),),
                        "Check the user's traffic for abuse or a stuck client; give users a per-user budget "
                        "(costplane budget set … --scope tenant=T,user=*).",
                    )
                )
        return out

    def _judge_forecasts(self, minute: int) -> list[Finding]:
        """Each monthly budget member's month-end projection (:func:`costplane.reports.projection.project`, the
        same as ``costplane forecast``) at the end of the judged minute, in the budget's timezone."""
        out: list[Finding] = []
        end = minute + MINUTE_MS
        by_id = {b.id: b for b in self._budgets}
        for (budget_id, member), days in self._month.items():
            b = by_id.get(budget_id)
            if b is None or b.period != "month":
                continue  # restored from saved state before the budgets arrived
            w = window_for("month", b.tz, minute)
            tenant = b.scope.get("tenant", "")
            cfg = self.config_for(tenant)
            if end - w.start_ms < cfg.forecast_min_elapsed_ms:
                continue
            zone = ZoneInfo(b.tz)
            now = datetime.fromtimestamp(end / 1000, tz=UTC).astimezone(zone)
            first = history_start(now)
            daily: dict[date, int] = {}
            for start, amount in days.items():
                if start >= end:
                    continue  # a day after the judged minute (a replay judging the past): not yet
                local = datetime.fromtimestamp(start / 1000, tz=UTC).astimezone(zone).date()
                if local >= first:
                    daily[local] = daily.get(local, 0) + amount
            p = project(daily, now, b.limit)
            if p.month_to_date <= 0:
                continue
            out.append(
                self._finding(
                    "budget_forecast",
                    tenant,
                    {"budget_id": budget_id, "member": member},
                    p.overrun,
                    "warning",
                    f"budget {budget_id} ({member}) projected at {p.projected} of {b.limit} {b.unit} by month end"
                    + (f", reaching it on {p.cross_date.isoformat()}" if p.cross_date is not None else ""),
                    w.start_ms,
                    w.end_ms,
                    {
                        "spent": str(p.month_to_date),
                        "limit": str(b.limit),
                        "unit": b.unit,
                        "projected": str(p.projected),
                        "low": str(p.low),
                        "high": str(p.high),
                        "projected_share": _ratio(p.projected, b.limit),
                        "basis": p.basis,
                        "crossing_date": p.cross_date.isoformat() if p.cross_date is not None else "",
                        "month_end_ms": str(w.end_ms),
                    },
                    (),
                    "Find what grew this month (costplane report spend --by feature,model --since the month start) "
                    "and raise the budget or cut the growth before the crossing date.",
                )
            )
        return out

    def _evict(self, minute: int) -> None:
        """Forget subjects idle for ``idle_evict_minutes`` and requests/sessions past their TTL."""

        def idle(tenant: str, base: _Baseline) -> bool:
            return base.last_seen < minute - self.config_for(tenant).idle_evict_minutes * MINUTE_MS

        for subject in [k for k, b in self._subjects.items() if idle(k[0], b)]:
            del self._subjects[subject]
        for model in [k for k, b in self._models.items() if idle(k[0], b)]:
            del self._models[model]
        for subject in [s for s in self._cache if s not in self._subjects]:
            del self._cache[subject]
        for rkey in [k for k, r in self._requests.items() if r.last_ms < minute - self.config_for(k[0]).request_ttl_ms]:
            del self._requests[rkey]
        for skey in [k for k, s in self._sessions.items() if s.last_ms < minute - self.config_for(k[0]).session_ttl_ms]:
            del self._sessions[skey]
        for tenant in [t for t, d in self._user_days.items() if d.window_end + MINUTE_MS * 60 < minute]:
            del self._user_days[tenant]

    # -- helpers ---------------------------------------------------------------------------------------------
    def _was_active(self, kind: str, tenant: str, labels: Mapping[str, str]) -> bool:
        return _dedup_key(kind, tenant, labels) in self._recent

    def _top(self, data: _Minute, metric: int, cfg: DetectorConfig) -> tuple[Contributor, ...]:
        """Top contributors by ``metric`` (0 cost, 1 tokens, 2 attempts, 3 retries), cost as tie-breaker."""
        # nsmallest, not a full sort: a busy subject's minute has one contributor per user (thousands).
        ranked = heapq.nsmallest(
            cfg.top_contributors, data.contrib.items(), key=lambda kv: (-kv[1][metric], -kv[1][0], kv[0])
        )
        return tuple(
            Contributor("user_id" if dim == "user" else dim, value, v[0], v[1], v[2])
            for (dim, value), v in ranked
            if v[metric] > 0
        )

    def _finding(
        self,
        kind: str,
        tenant: str,
        labels: Mapping[str, str],
        active: bool,
        severity: Severity,
        summary: str,
        start: int,
        end: int,
        numbers: dict[str, str],
        contributors: tuple[Contributor, ...],
        action: str,
    ) -> Finding:
        return Finding(
            kind=kind,
            dedup_key=_dedup_key(kind, tenant, labels),
            tenant=tenant,
            active=active,
            severity=severity,
            summary=summary,
            window_start_ms=start,
            window_end_ms=end,
            subject={"tenant": tenant, **labels},
            numbers=numbers,
            contributors=contributors,
            suggested_action=action,
            runbook=f"docs/runbook.md#{kind.replace('_', '-')}",
        )

    def baselines(self) -> dict[str, Any]:
        """The learnt baselines as plain JSON (the worker may checkpoint them so a restart skips the warm-up).

        Only what takes minutes to learn is kept: spend and token levels with their variance, and cache-hit rates.
        Open minutes, retried requests and sessions are short-lived and rebuilt from traffic.
        """
        return {
            "subjects": [[list(k), b.level, b.var, b.minutes, b.last_seen] for k, b in self._subjects.items()],
            "models": [[list(k), b.level, b.var, b.minutes, b.last_seen] for k, b in self._models.items()],
            "cache": [[list(k), c.rate.numerator, c.rate.denominator, c.minutes] for k, c in self._cache.items()],
            "months": [
                [[_member_tenant(member), budget_id, member], {str(d): v for d, v in days.items()}]
                for (budget_id, member), days in self._month.items()
            ],
        }

    def load_baselines(self, data: Mapping[str, Any]) -> None:
        """Restore :meth:`baselines` output (entries already learnt here are kept; month spend is added)."""
        for key, level, var, minutes, last_seen in data.get("subjects", []):
            self._subjects.setdefault(tuple(key), _Baseline(int(level), int(var), int(minutes), int(last_seen)))
        for key, level, var, minutes, last_seen in data.get("models", []):
            tenant, model = key
            self._models.setdefault((tenant, model), _Baseline(int(level), int(var), int(minutes), int(last_seen)))
        for key, num, den, minutes in data.get("cache", []):
            self._cache.setdefault(tuple(key), _CacheBaseline(Fraction(int(num), int(den)), int(minutes)))
        for (_tenant, budget_id, member), saved in data.get("months", []):
            # Kept even for a budget not known yet (the budgets topic may be read after the state): judged once
            # it is, dropped by set_budgets when it is gone. Added, not kept: what this process counted since it
            # started is traffic the saved state never saw.
            cell = self._month.setdefault((budget_id, member), {})
            for day, amount in saved.items():
                cell[int(day)] = cell.get(int(day), 0) + int(amount)

    def forget_tenant(self, tenant: str) -> None:
        """Drop everything learnt about a tenant (its partition moved to another worker after a rebalance)."""
        for minute in list(self._open):
            self._open[minute] = {k: v for k, v in self._open[minute].items() if k[0] != tenant}
        for minute in list(self._open_models):
            self._open_models[minute] = {k: v for k, v in self._open_models[minute].items() if k[0] != tenant}
        for minute in list(self._open_unpriced):
            self._open_unpriced[minute] = {k: v for k, v in self._open_unpriced[minute].items() if k[0] != tenant}
        for minute in list(self._open_billed):
            self._open_billed[minute] = {k: v for k, v in self._open_billed[minute].items() if k[0] != tenant}
        _drop_tenant(self._billed, tenant)
        _drop_tenant(self._subjects, tenant)
        _drop_tenant(self._cache, tenant)
        _drop_tenant(self._models, tenant)
        _drop_tenant(self._requests, tenant)
        _drop_tenant(self._sessions, tenant)
        self._user_days.pop(tenant, None)
        for dedup_key in [k for k, (f, _) in self._recent.items() if f.tenant == tenant]:
            del self._recent[dedup_key]
            self._cleared.discard(dedup_key)
        for mkey in [k for k in self._month if k[1] == f"tenant={tenant}" or k[1].startswith(f"tenant={tenant},")]:
            del self._month[mkey]

    def tracked(self) -> dict[str, int]:
        """Sizes of the internal tables (for metrics and the memory-bound tests)."""
        return {
            "subjects": len(self._subjects),
            "models": len(self._models),
            "requests": len(self._requests),
            "sessions": len(self._sessions),
            "open_minutes": len(self._open),
            "recent": len(self._recent),
            "user_days": sum(len(d.users) for d in self._user_days.values()),
            "months": len(self._month),
        }


def _member_tenant(member: str) -> str:
    """The tenant of a budget member key (``tenant=acme,user=u1`` → ``acme``: the tenant always comes first)."""
    return member.split(",", 1)[0].removeprefix("tenant=")


def _drop_tenant(table: MutableMapping[Any, Any], tenant: str) -> None:
    """Delete the keys of a table keyed by tuples starting with the tenant."""
    for key in [k for k in table if k[0] == tenant]:
        del table[key]


def _dedup_key(kind: str, tenant: str, labels: Mapping[str, str]) -> str:
    """Stable per condition and subject: ``kind|tenant=…|dim=value|…`` (labels in sorted order)."""
    return "|".join([kind, f"tenant={tenant}", *(f"{k}={v}" for k, v in sorted(labels.items()))])
