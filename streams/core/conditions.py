"""Conditions the stream worker sees itself, not through the detectors: budget thresholds and blocks, floods of
dead letters, and fail-opens (Redis effects that could not be written).

Pure, like the detectors: the worker reports what happened (a threshold notification, a decision or a lift, the
dead letters of a message, the result of a Redis effects write) with its clock, and :meth:`WorkerConditions.findings`
reports every condition's *level* as a :class:`Finding`, active or not. The alert lifecycle turns levels into edges
(one trigger, one resolve), with the same hysteresis and cooldown as the detectors' findings.

When each condition holds, and why:

* ``budget_threshold`` — from a soft-threshold notification until the end of the window it was crossed in. A
  rolling window re-notifies every bucket while the spend stays over, which only extends the incident; a calendar
  window's next crossing (the next day) is a new incident of the same key. A ``notify`` budget reaching its limit
  is a threshold of 1: nothing is blocked, but someone should know.
* ``budget_blocked`` — from a block or degrade decision until its lift (budget raised, changed, deleted, window
  over). If no lift arrives (another worker took the partition over), the decision's window end ends it: Redis
  expires the decision then too. degrade is a warning, block critical (an escalation when one follows the other).
* ``dead_letter_flood`` — a tenant's dead letters over the last ``dead_letter_window_ms``, scaled to a minute,
  reach ``dead_letters_per_minute``. Processing time, not event time: an undecodable message has none.
* ``fail_open`` — the latest Redis effects write failed (decisions and counters were skipped, the guards run on
  what they cached); it clears at the next write that succeeds. It is a warning at first and escalates to
  critical when it has lasted ``fail_open_critical_ms``: a blip reaches Slack, an outage pages. Not per tenant:
  the worker's Redis serves all of them, so the subject is ``tenant=*`` and every worker reports the same key.

An ended condition is reported inactive for ``clear_report_ms`` (so the lifecycle resolves on evidence), then
forgotten: memory is bounded by the conditions that hold. State is plain JSON (:meth:`state` / :meth:`from_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from costplane.streams.core.findings import Contributor, Finding, Severity

ALL_TENANTS = "*"
UNKNOWN_TENANT = "unknown"
_SECOND_MS = 1000


@dataclass(frozen=True, slots=True)
class ConditionConfig:
    """Thresholds and timing of the worker's own conditions (milliseconds; settings hold seconds)."""

    dead_letters_per_minute: int = 100
    dead_letter_window_ms: int = 60_000
    fail_open_critical_ms: int = 60_000
    clear_report_ms: int = 600_000
    block_grace_ms: int = 60_000  # a decision whose window ended this long ago with no lift has ended
    max_flood_tenants: int = 10_000

    def __post_init__(self) -> None:
        if self.dead_letters_per_minute < 1 or self.dead_letter_window_ms < _SECOND_MS:
            raise ValueError("dead_letters_per_minute must be >= 1 and dead_letter_window_ms >= 1000")
        if min(self.fail_open_critical_ms, self.clear_report_ms, self.block_grace_ms) < 0:
            raise ValueError("times must be >= 0")


def _usd(nanos: int) -> str:
    return str(Decimal(nanos).scaleb(-9))


def _amount(value: int, unit: str) -> str:
    return f"${_usd(value)}" if unit == "usd" else f"{value} tokens"


def _ratio(num: int, den: int) -> str:
    return str((Decimal(num) / Decimal(den)).quantize(Decimal("0.0001"))) if den else "0"


def dedup_key(kind: str, tenant: str, labels: Mapping[str, str]) -> str:
    """``kind|tenant=…|k=v…`` (labels sorted): the same form as the detectors' keys."""
    return "|".join([kind, f"tenant={tenant}", *(f"{k}={v}" for k, v in sorted(labels.items()))])


@dataclass(slots=True)
class _Held:
    """One condition: the finding it reports while it holds, until when, and since when it has ended."""

    finding: Finding
    until_ms: int | None = None  # holds until then (thresholds, blocks); None = until ended explicitly
    ended_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"finding": asdict(self.finding), "until_ms": self.until_ms, "ended_ms": self.ended_ms}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _Held:
        f = dict(d["finding"])
        f["contributors"] = tuple(Contributor(**c) for c in f.get("contributors") or ())
        return cls(
            Finding(**f),
            None if d.get("until_ms") is None else int(d["until_ms"]),
            None if d.get("ended_ms") is None else int(d["ended_ms"]),
        )


@dataclass(slots=True)
class _Flood:
    """A tenant's dead letters (per second, per reason) and valid events (per second) in the recent window."""

    dead: dict[int, dict[str, int]] = field(default_factory=dict)
    valid: dict[int, int] = field(default_factory=dict)

    def prune(self, first_second: int) -> None:
        for second in [s for s in self.dead if s < first_second]:
            del self.dead[second]
        for second in [s for s in self.valid if s < first_second]:
            del self.valid[second]


@dataclass(slots=True)
class _FailOpen:
    since_ms: int
    last_ms: int
    failures: int
    skipped_decisions: int
    skipped_counters: int


class WorkerConditions:
    """Levels of the worker's own alert kinds, for the tenants on this worker's partitions."""

    def __init__(self, config: ConditionConfig | None = None) -> None:
        self.config = config or ConditionConfig()
        self._held: dict[str, _Held] = {}  # dedup key -> threshold / block / flood / fail-open condition
        self._floods: dict[str, _Flood] = {}
        self._fail: _FailOpen | None = None

    # -- what happened ---------------------------------------------------------------------------------------
    def threshold_crossed(self, note: Mapping[str, Any]) -> None:
        """A soft-threshold notification of the worker's budget evaluation (a ``threshold`` ``Decision.to_dict()``)."""
        tenant, budget_id, member = str(note["tenant"]), str(note["budget_id"]), str(note["member"])
        threshold = str(note["threshold"])
        spent, limit, unit = int(note["spent"]), int(note["limit"]), str(note["unit"])
        start, end = int(note["window_start_ms"]), int(note["window_end_ms"])
        labels = {"budget_id": budget_id, "member": member, "threshold": threshold}
        share = _ratio(spent, limit)
        finding = Finding(
            kind="budget_threshold",
            dedup_key=dedup_key("budget_threshold", tenant, labels),
            tenant=tenant,
            active=True,
            severity="warning",
            summary=f"budget {budget_id} ({member}) passed {(Decimal(threshold) * 100).normalize():f} % of its limit: "
            f"{_amount(spent, unit)} of {_amount(limit, unit)}",
            window_start_ms=start,
            window_end_ms=end,
            subject={"tenant": tenant, **labels},
            numbers={
                "spent": str(spent),
                "limit": str(limit),
                "unit": unit,
                "threshold": threshold,
                "share": share,
                **({"spent_usd": _usd(spent), "limit_usd": _usd(limit)} if unit == "usd" else {}),
            },
            suggested_action="See who is spending (the cost-spike contributor query) and raise the limit or cut "
            "the usage before the hard limit applies.",
            runbook="docs/runbook.md#budget-threshold",
        )
        self._hold(finding, until_ms=end)

    def decided(self, decision: Mapping[str, Any]) -> None:
        """A decision of the worker's budget evaluation (``Decision.to_dict()``): block, degrade or notify."""
        action = str(decision["action"])
        if action == "notify":  # the hard limit of a budget that only notifies: a threshold of 1
            self.threshold_crossed({**decision, "threshold": 1})
            return
        if action not in ("block", "degrade"):
            return
        tenant, budget_id, member = str(decision["tenant"]), str(decision["budget_id"]), str(decision["member"])
        spent, limit, unit = int(decision["spent"]), int(decision["limit"]), str(decision["unit"])
        start, end = int(decision["window_start_ms"]), int(decision["window_end_ms"])
        labels = {"budget_id": budget_id, "member": member}
        degrade = decision.get("degrade_model")
        doing = f"degraded to {degrade}" if action == "degrade" else "blocked"
        severity: Severity = "critical" if action == "block" else "warning"
        finding = Finding(
            kind="budget_blocked",
            dedup_key=dedup_key("budget_blocked", tenant, labels),
            tenant=tenant,
            active=True,
            severity=severity,
            summary=f"budget {budget_id} ({member}) reached its limit: calls are {doing} "
            f"({_amount(spent, unit)} of {_amount(limit, unit)})",
            window_start_ms=start,
            window_end_ms=end,
            subject={"tenant": tenant, **labels},
            numbers={
                "action": action,
                "spent": str(spent),
                "limit": str(limit),
                "unit": unit,
                "share": _ratio(spent, limit),
                "until_ms": str(end),
                **({"degrade_model": str(degrade)} if degrade else {}),
                **({"spent_usd": _usd(spent), "limit_usd": _usd(limit)} if unit == "usd" else {}),
            },
            suggested_action="Tell the owners of the scope; raise the limit (costplane budget set …) if the "
            "business needs the traffic.",
            runbook="docs/runbook.md#budget-blocked",
        )
        self._hold(finding, until_ms=end + self.config.block_grace_ms)

    def lifted(self, lift: Mapping[str, Any], now_ms: int) -> None:
        """A lift (a ``lift`` record, ``Decision.to_dict()``): the block or degrade of that member is over."""
        key = dedup_key(
            "budget_blocked", str(lift["tenant"]), {"budget_id": str(lift["budget_id"]), "member": str(lift["member"])}
        )
        held = self._held.get(key)
        if held is not None and held.ended_ms is None:
            held.ended_ms = now_ms
            held.finding = _with_numbers(held.finding, lift_reason=str(lift.get("reason", "")))

    def dead_lettered(self, tenant: str, reasons: Iterable[str], now_ms: int) -> None:
        """Dead letters of one message (one reason per dead letter).

        At most ``max_flood_tenants`` tenants are counted at a time (the key of garbage can be anything); dead
        letters of any further one count as tenant ``unknown``.
        """
        if tenant not in self._floods and len(self._floods) >= self.config.max_flood_tenants:
            tenant = UNKNOWN_TENANT
        second = now_ms // _SECOND_MS
        cell = self._floods.setdefault(tenant, _Flood()).dead.setdefault(second, {})
        for reason in reasons:
            cell[reason] = cell.get(reason, 0) + 1

    def counted(self, tenant: str, events: int, now_ms: int) -> None:
        """Valid events of a tenant (the evidence beside its dead letters); only kept while it has dead letters."""
        flood = self._floods.get(tenant)
        if flood is not None:
            second = now_ms // _SECOND_MS
            flood.valid[second] = flood.valid.get(second, 0) + events

    def effects_written(self, ok: bool, now_ms: int, *, decisions: int = 0, counters: int = 0) -> None:
        """The result of one Redis effects write: a failure is a fail-open, a success ends one."""
        if ok:
            self._fail = None
            return
        fail = self._fail
        if fail is None:
            fail = self._fail = _FailOpen(now_ms, now_ms, 0, 0, 0)
        fail.last_ms = now_ms
        fail.failures += 1
        fail.skipped_decisions += decisions
        fail.skipped_counters += counters

    def forget_tenant(self, tenant: str) -> None:
        """Drop a tenant's conditions (its partition moved to another worker)."""
        self._floods.pop(tenant, None)
        for key in [k for k, h in self._held.items() if h.finding.tenant == tenant]:
            del self._held[key]

    # -- levels ----------------------------------------------------------------------------------------------
    def findings(self, now_ms: int) -> list[Finding]:
        """Every condition's level now: active ones, and ended ones for ``clear_report_ms`` after they ended."""
        self._judge_floods(now_ms)
        self._judge_fail_open(now_ms)
        out: list[Finding] = []
        for key, held in list(self._held.items()):
            if held.ended_ms is None and held.until_ms is not None and now_ms >= held.until_ms:
                held.ended_ms = held.until_ms
            if held.ended_ms is None:
                out.append(held.finding)
            elif now_ms - held.ended_ms < self.config.clear_report_ms:
                out.append(_inactive(held.finding))
            else:
                del self._held[key]
        return out

    def _judge_floods(self, now_ms: int) -> None:
        cfg = self.config
        first = (now_ms - cfg.dead_letter_window_ms) // _SECOND_MS + 1
        for tenant, flood in list(self._floods.items()):
            flood.prune(first)
            reasons: dict[str, int] = {}
            for cell in flood.dead.values():
                for reason, n in cell.items():
                    reasons[reason] = reasons.get(reason, 0) + n
            dead = sum(reasons.values())
            valid = sum(flood.valid.values())
            per_minute = Fraction(dead * 60_000, cfg.dead_letter_window_ms)
            key = dedup_key("dead_letter_flood", tenant, {})
            if not flood.dead:
                del self._floods[tenant]
            if per_minute < cfg.dead_letters_per_minute:
                self._end(key, now_ms)
                continue
            severity: Severity = "critical" if per_minute >= 10 * cfg.dead_letters_per_minute else "warning"
            top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            self._hold(
                Finding(
                    kind="dead_letter_flood",
                    dedup_key=key,
                    tenant=tenant,
                    active=True,
                    severity=severity,
                    summary=f"{dead} usage events went to the dead-letter topic in the last "
                    f"{cfg.dead_letter_window_ms // 1000} s ({float(per_minute):.0f}/min, threshold "
                    f"{cfg.dead_letters_per_minute}/min); top reason {top[0][0]}",
                    window_start_ms=now_ms - cfg.dead_letter_window_ms,
                    window_end_ms=now_ms,
                    subject={"tenant": tenant},
                    numbers={
                        "dead_letters": str(dead),
                        "valid_events": str(valid),
                        "dead_letter_share": _ratio(dead, dead + valid),
                        "per_minute": str(round(per_minute)),
                        "threshold_per_minute": str(cfg.dead_letters_per_minute),
                        "window_s": str(cfg.dead_letter_window_ms // 1000),
                        **{f"reason_{reason}": str(n) for reason, n in top},
                    },
                    contributors=tuple(Contributor("reason", reason, attempts=n) for reason, n in top[:5]),
                    suggested_action="Read a few dead letters (costplane dlq inspect): the reason names the problem; "
                    "roll back or fix the producer, then costplane dlq replay.",
                    runbook="docs/runbook.md#dead-letter-flood",
                )
            )

    def _judge_fail_open(self, now_ms: int) -> None:
        key = dedup_key("fail_open", ALL_TENANTS, {"store": "redis"})
        fail = self._fail
        if fail is None:
            self._end(key, now_ms)
            return
        lasted = max(now_ms - fail.since_ms, 0)
        severity: Severity = "critical" if lasted >= self.config.fail_open_critical_ms else "warning"
        self._hold(
            Finding(
                kind="fail_open",
                dedup_key=key,
                tenant=ALL_TENANTS,
                active=True,
                severity=severity,
                summary=f"the worker cannot write decisions and counters to Redis ({fail.failures} failed writes in "
                f"{lasted // 1000} s): budgets are not enforced in real time (the worker log says why: "
                f"redis_effects_failed)",
                window_start_ms=fail.since_ms,
                window_end_ms=max(fail.last_ms, now_ms),
                subject={"tenant": ALL_TENANTS, "store": "redis"},
                numbers={
                    "failed_writes": str(fail.failures),
                    "skipped_decisions": str(fail.skipped_decisions),
                    "skipped_counter_updates": str(fail.skipped_counters),
                    "failing_for_s": str(lasted // 1000),
                },
                suggested_action="Restore Redis (memory, connections, network, failover); the worker reconciles "
                "counters and decisions once it is back.",
                runbook="docs/runbook.md#fail-open",
            )
        )

    def _hold(self, finding: Finding, until_ms: int | None = None) -> None:
        held = self._held.get(finding.dedup_key)
        if held is None or held.ended_ms is not None:
            self._held[finding.dedup_key] = _Held(finding, until_ms)
            return
        held.finding = finding
        held.until_ms = until_ms if held.until_ms is None or until_ms is None else max(held.until_ms, until_ms)

    def _end(self, key: str, now_ms: int) -> None:
        held = self._held.get(key)
        if held is not None and held.ended_ms is None:
            held.ended_ms = now_ms

    # -- state -----------------------------------------------------------------------------------------------
    def state(self, tenant: str) -> dict[str, Any]:
        """A tenant's held budget conditions as plain JSON (dead-letter counts are short-lived: not kept)."""
        return {
            key: h.to_dict()
            for key, h in self._held.items()
            if h.finding.tenant == tenant and h.finding.kind in ("budget_threshold", "budget_blocked")
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore :meth:`state` output (conditions already held here are kept)."""
        for key, d in data.items():
            self._held.setdefault(str(key), _Held.from_dict(d))

    def tracked(self) -> dict[str, int]:
        return {"held": len(self._held), "flood_tenants": len(self._floods), "fail_open": int(self._fail is not None)}


def _inactive(f: Finding) -> Finding:
    return replace(f, active=False, summary=f"cleared: {f.summary}")


def _with_numbers(f: Finding, **numbers: str) -> Finding:
    return replace(f, numbers={**f.numbers, **numbers})
