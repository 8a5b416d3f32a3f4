"""Findings in, alert lifecycle events out: edge-triggered per dedup key, with hysteresis and a cooldown.

Detectors report a condition's *level* every evaluation (active or not). On-call wants *edges*: one trigger when
an incident starts, one resolve when it is over. Noise makes levels flap, so:

* a condition that goes inactive is only resolved once it has been clear for ``resolve_after_ms``; if it comes
  back before that, the incident simply stays open (no resolve, no second trigger);
* after a resolve, the same condition re-appearing within ``cooldown_ms`` does not page again; if it is still
  active when the cooldown ends, it triggers then (a real, lasting incident is never hidden);
* a condition no longer reported at all (its subject's traffic stopped) for ``stale_after_ms`` is resolved;
* severity escalation (e.g. warning → critical) while open emits one more trigger with ``escalated=True`` and the
  same dedup key: PagerDuty folds it into the open incident, Slack shows the escalation. De-escalation emits
  nothing; the resolve carries the highest severity reached, so severity-based routing sends the resolve
  wherever a trigger went.

The lifecycle is pure (no clock, no I/O): ``observe(findings, now_ms)``. Its state is a JSON-compatible dict
(:meth:`AlertLifecycle.state` / :meth:`AlertLifecycle.from_state`, or per key for a Faust table) and bounded:
resolved keys are forgotten once their cooldown has passed, and at most ``max_tracked`` keys are kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

from costplane.config import AlertSettings
from costplane.streams.alerting.model import AlertEvent, contributor_from_dict, contributor_to_dict, severity_rank
from costplane.streams.core.findings import Finding, Severity

Status = Literal["open", "clearing", "closed", "suppressed"]
_ALERT_NAMESPACE = uuid.UUID("6f1c1d2e-3b9a-5c1e-9a51-0c0571a1e47d")


@dataclass(slots=True, frozen=True)
class LifecycleConfig:
    """Timing of the lifecycle, in milliseconds (settings hold seconds; see ``AlertSettings``)."""

    resolve_after_ms: int = 120_000
    cooldown_ms: int = 600_000
    stale_after_ms: int = 600_000
    max_tracked: int = 10_000

    def __post_init__(self) -> None:
        if min(self.resolve_after_ms, self.cooldown_ms, self.stale_after_ms) < 0 or self.max_tracked < 1:
            raise ValueError("lifecycle times must be >= 0 and max_tracked >= 1")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> LifecycleConfig:
        return cls(
            resolve_after_ms=round(settings.resolve_after_s * 1000),
            cooldown_ms=round(settings.cooldown_s * 1000),
            stale_after_ms=round(settings.stale_after_s * 1000),
            max_tracked=settings.max_tracked,
        )


@dataclass(slots=True)
class IncidentState:
    """What the lifecycle remembers about one dedup key.

    ``finding`` is the last *active* finding (the content of the resolve); ``opened_ms`` identifies the incident.
    """

    status: Status
    finding: Finding
    opened_ms: int
    last_seen_ms: int
    sent_severity: Severity
    clear_since_ms: int | None = None
    resolved_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "finding": finding_to_dict(self.finding),
            "opened_ms": self.opened_ms,
            "last_seen_ms": self.last_seen_ms,
            "sent_severity": self.sent_severity,
            "clear_since_ms": self.clear_since_ms,
            "resolved_ms": self.resolved_ms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IncidentState:
        return cls(
            status=cast(Status, d["status"]),
            finding=finding_from_dict(d["finding"]),
            opened_ms=int(d["opened_ms"]),
            last_seen_ms=int(d["last_seen_ms"]),
            sent_severity=cast(Severity, d["sent_severity"]),
            clear_since_ms=None if d.get("clear_since_ms") is None else int(d["clear_since_ms"]),
            resolved_ms=None if d.get("resolved_ms") is None else int(d["resolved_ms"]),
        )


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """JSON-compatible form of a finding (for lifecycle state and debugging)."""
    return {
        "kind": f.kind,
        "dedup_key": f.dedup_key,
        "tenant": f.tenant,
        "active": f.active,
        "severity": f.severity,
        "summary": f.summary,
        "window_start_ms": f.window_start_ms,
        "window_end_ms": f.window_end_ms,
        "subject": dict(f.subject),
        "numbers": dict(f.numbers),
        "contributors": [contributor_to_dict(c) for c in f.contributors],
        "suggested_action": f.suggested_action,
        "runbook": f.runbook,
    }


def finding_from_dict(d: dict[str, Any]) -> Finding:
    return Finding(
        kind=str(d["kind"]),
        dedup_key=str(d["dedup_key"]),
        tenant=str(d["tenant"]),
        active=bool(d["active"]),
        severity=cast(Severity, d["severity"]),
        summary=str(d["summary"]),
        window_start_ms=int(d["window_start_ms"]),
        window_end_ms=int(d["window_end_ms"]),
        subject=dict(d.get("subject") or {}),
        numbers=dict(d.get("numbers") or {}),
        contributors=tuple(contributor_from_dict(c) for c in d.get("contributors") or ()),
        suggested_action=str(d.get("suggested_action", "")),
        runbook=str(d.get("runbook", "")),
    )


def alert_id(dedup_key: str, opened_ms: int, action: str, severity: str) -> str:
    """Deterministic event id: a replay of the same findings yields the same ids, so receivers can dedup."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{dedup_key}\x1f{opened_ms}\x1f{action}\x1f{severity}"))


class AlertLifecycle:
    """Edge-triggering state machine over findings, one incident per dedup key at a time."""

    def __init__(self, config: LifecycleConfig | None = None, states: dict[str, IncidentState] | None = None) -> None:
        self.config = config or LifecycleConfig()
        self._states: dict[str, IncidentState] = dict(states or {})
        self.overflowed = 0  # findings not tracked because max_tracked keys were all open incidents

    # -- state -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, dict[str, Any]]:
        """JSON-compatible snapshot of every tracked key."""
        return {key: st.to_dict() for key, st in self._states.items()}

    @classmethod
    def from_state(cls, state: dict[str, dict[str, Any]], config: LifecycleConfig | None = None) -> AlertLifecycle:
        return cls(config, {key: IncidentState.from_dict(d) for key, d in state.items()})

    def open_incidents(self) -> list[str]:
        """Dedup keys whose trigger was sent and whose resolve was not (yet)."""
        return [k for k, st in self._states.items() if st.status in ("open", "clearing")]

    def __len__(self) -> int:
        return len(self._states)

    def forget_tenant(self, tenant: str) -> dict[str, dict[str, Any]]:
        """Stop tracking a tenant's keys (its partition moved to another worker); returns their state.

        Nothing is emitted: the tenant's new owner continues its incidents (from the returned state, when the
        caller hands it over) and resolves them there.
        """
        keys = [k for k, st in self._states.items() if st.finding.tenant == tenant]
        return {k: self._states.pop(k).to_dict() for k in keys}

    def load(self, state: dict[str, dict[str, Any]]) -> None:
        """Track keys from another lifecycle's :meth:`state` (keys already tracked here are kept)."""
        for key, d in state.items():
            self._states.setdefault(key, IncidentState.from_dict(d))

    # -- the state machine ---------------------------------------------------------------------------------------
    def observe(self, findings: Iterable[Finding], now_ms: int) -> list[AlertEvent]:
        """Feed one evaluation's findings; returns the trigger/resolve events to publish, in order."""
        latest: dict[str, Finding] = {}
        for f in findings:
            previous = latest.get(f.dedup_key)
            # Several findings for one key in one evaluation: active beats inactive, then the higher severity.
            if previous is None or (f.active, severity_rank(f.severity)) >= (
                previous.active,
                severity_rank(previous.severity),
            ):
                latest[f.dedup_key] = f
        events: list[AlertEvent] = []
        for key, f in latest.items():
            events.extend(self._observe_one(key, f, now_ms))
        for key in [k for k in self._states if k not in latest]:
            events.extend(self._tick_absent(key, now_ms))
        self._forget_and_bound(now_ms)
        return events

    def _observe_one(self, key: str, f: Finding, now_ms: int) -> list[AlertEvent]:
        cfg = self.config
        st = self._states.get(key)
        if st is not None:
            st.last_seen_ms = now_ms
        if f.active:
            if st is None or st.status == "closed":
                if st is None and not self._has_room():
                    self.overflowed += 1
                    return []
                if st is not None and st.resolved_ms is not None and now_ms - st.resolved_ms < cfg.cooldown_ms:
                    st.status, st.finding = "suppressed", f
                    return []
                return [self._open(key, f, now_ms)]
            if st.status == "suppressed":
                st.finding = f
                if st.resolved_ms is not None and now_ms - st.resolved_ms < cfg.cooldown_ms:
                    return []
                return [self._open(key, f, now_ms)]
            # open or clearing: the incident continues.
            st.status, st.clear_since_ms, st.finding = "open", None, f
            if severity_rank(f.severity) > severity_rank(st.sent_severity):
                st.sent_severity = f.severity
                return [self._event(st, "trigger", f, now_ms, escalated=True)]
            return []
        # inactive
        if st is None or st.status == "closed":
            return []
        if st.status == "suppressed":
            st.status = "closed"
            return []
        if st.status == "open":
            st.status, st.clear_since_ms = "clearing", now_ms
        return self._maybe_resolve(st, f, now_ms)

    def _tick_absent(self, key: str, now_ms: int) -> list[AlertEvent]:
        st = self._states[key]
        if st.status == "clearing":
            return self._maybe_resolve(st, None, now_ms)
        if st.status == "open" and now_ms - st.last_seen_ms >= self.config.stale_after_ms:
            return self._resolve(st, None, now_ms)
        if st.status == "suppressed" and now_ms - st.last_seen_ms >= self.config.stale_after_ms:
            st.status = "closed"
        return []

    def _maybe_resolve(self, st: IncidentState, f: Finding | None, now_ms: int) -> list[AlertEvent]:
        assert st.clear_since_ms is not None
        if now_ms - st.clear_since_ms >= self.config.resolve_after_ms:
            return self._resolve(st, f, now_ms)
        return []

    def _open(self, key: str, f: Finding, now_ms: int) -> AlertEvent:
        st = IncidentState(status="open", finding=f, opened_ms=now_ms, last_seen_ms=now_ms, sent_severity=f.severity)
        self._states[key] = st
        return self._event(st, "trigger", f, now_ms)

    def _resolve(self, st: IncidentState, f: Finding | None, now_ms: int) -> list[AlertEvent]:
        st.status, st.resolved_ms, st.clear_since_ms = "closed", now_ms, None
        return [self._event(st, "resolve", f, now_ms)]

    def _event(
        self,
        st: IncidentState,
        action: Literal["trigger", "resolve"],
        current: Finding | None,
        now_ms: int,
        escalated: bool = False,
    ) -> AlertEvent:
        base = st.finding
        if action == "resolve":
            # The resolve describes the incident (its subject, contributors, top severity) with the latest window
            # and numbers, which show the condition back to normal when the detector still reports it.
            latest = current or base
            summary = f"Resolved: {base.summary}"
            window = (latest.window_start_ms, latest.window_end_ms)
            numbers = dict(latest.numbers) if current is not None else dict(base.numbers)
            severity = st.sent_severity
        else:
            summary, window, numbers, severity = (
                base.summary,
                (base.window_start_ms, base.window_end_ms),
                dict(base.numbers),
                base.severity,
            )
        return AlertEvent(
            alert_id=alert_id(base.dedup_key, st.opened_ms, action, severity),
            dedup_key=base.dedup_key,
            kind=base.kind,
            action=action,
            escalated=escalated,
            severity=severity,
            tenant=base.tenant,
            subject=dict(base.subject),
            summary=summary[:1024],
            window_start_ms=window[0],
            window_end_ms=window[1],
            numbers=numbers,
            contributors=base.contributors,
            suggested_action=base.suggested_action,
            runbook=base.runbook,
            occurred_at_ms=now_ms,
        )

    def _has_room(self) -> bool:
        if len(self._states) < self.config.max_tracked:
            return True
        # Make room by forgetting the longest-resolved keys; open incidents are never dropped (they owe a resolve).
        closed = sorted(
            (st.resolved_ms or st.last_seen_ms, k)
            for k, st in self._states.items()
            if st.status in ("closed", "suppressed")
        )
        if not closed:
            return False
        del self._states[closed[0][1]]
        return True

    def _forget_and_bound(self, now_ms: int) -> None:
        cooldown = self.config.cooldown_ms
        for key in [
            k
            for k, st in self._states.items()
            if st.status == "closed" and (st.resolved_ms is None or now_ms - st.resolved_ms >= cooldown)
        ]:
            del self._states[key]
