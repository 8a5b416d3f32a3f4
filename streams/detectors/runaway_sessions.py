"""runaway_loop (session): a session whose prompt grew on ``session_turns`` consecutive turns to at least
``session_growth`` × the first and ``session_min_prompt_tokens`` — a conversation history nobody bounds."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

from costplane.streams.core.findings import Contributor, Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import (
    MINUTE_MS,
    Context,
    Unsaved,
    Verdict,
    drop_tenant,
    finding,
    prompt_of,
    ratio,
)
from costplane.streams.detectors.config import DetectorConfig


@dataclass(slots=True)
class Session:
    tenant: str
    user: str | None
    feature: str | None
    last_turn: int
    prompts: list[int]
    last_ms: int


class RunawaySessions(Unsaved):
    """First attempts of session turns: the run of growing prompts per session (capped at ``max_sessions``,
    expired after ``session_ttl_ms``)."""

    counts_events = True

    def __init__(self) -> None:
        self.sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        e = event.event
        if e.session_id is None or e.turn is None or e.attempt != 1:
            return
        key = (e.tenant, e.session_id)
        prompt = prompt_of(event)
        s = self.sessions.get(key)
        if s is None:
            s = Session(e.tenant, e.user_id, e.feature, e.turn, [prompt], e.occurred_at)
            self.sessions[key] = s
        elif e.turn > s.last_turn:
            s.prompts = (s.prompts + [prompt])[-config.session_turns :] if prompt > s.prompts[-1] else [prompt]
            s.last_turn = e.turn
        s.last_ms = max(s.last_ms, e.occurred_at)
        self.sessions.move_to_end(key)
        while len(self.sessions) > config.max_sessions:
            self.sessions.popitem(last=False)

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        end = minute + MINUTE_MS
        for (tenant, session_id), s in self.sessions.items():
            cfg = context.config_for(tenant)
            if len(s.prompts) < cfg.session_turns or not minute <= s.last_ms < end:
                continue
            first, last = s.prompts[0], s.prompts[-1]
            if last < cfg.session_min_prompt_tokens or last < Fraction(cfg.session_growth) * first:
                continue
            subject = {"session_id": session_id} | ({"feature": s.feature} if s.feature else {})
            out.append(finding("runaway_loop", tenant, subject, minute, end, _verdict(session_id, s)))
        expired = [k for k, s in self.sessions.items() if s.last_ms < minute - context.config_for(k[0]).session_ttl_ms]
        for key in expired:
            del self.sessions[key]
        return out

    def forget(self, tenant: str) -> None:
        drop_tenant(self.sessions, tenant)

    def tracked(self) -> dict[str, int]:
        return {"sessions": len(self.sessions)}


def _verdict(session_id: str, s: Session) -> Verdict:
    first, last = s.prompts[0], s.prompts[-1]
    return Verdict(
        True,
        "warning",
        f"session {session_id}: the prompt grew on {len(s.prompts)} turns in a row, {first} → {last} tokens",
        {
            "turn": str(s.last_turn),
            "turns_growing": str(len(s.prompts)),
            "first_prompt_tokens": str(first),
            "last_prompt_tokens": str(last),
            "growth": ratio(last, first),
        },
        (Contributor("user_id", s.user),) if s.user else (),
        "Bound the conversation history (truncate or summarise old turns) and cap turns per session.",
    )
