"""runaway_loop (request): one request_id retried more than ``runaway_attempts`` times — a client retrying a
deterministic failure in a loop. Only retried requests are tracked: a first attempt alone can never be a runaway."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from costplane.streams.core.findings import Contributor, Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Unsaved, Verdict, drop_tenant, finding, tokens_of, usd
from costplane.streams.detectors.config import ATTR, DetectorConfig


@dataclass(slots=True)
class Request:
    tenant: str
    subject: dict[str, str]
    attempts: int
    max_attempt: int
    nanos: int
    tokens: int
    user: str | None
    last_ms: int


class RunawayRequests(Unsaved):
    """Retried requests, least recently retried first (capped at ``max_requests``, expired after
    ``request_ttl_ms``)."""

    counts_events = True

    def __init__(self) -> None:
        self.requests: OrderedDict[tuple[str, str], Request] = OrderedDict()

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        e = event.event
        if e.attempt <= 1:
            return
        key = (e.tenant, e.request_id)
        req = self.requests.get(key)
        if req is None:
            subject = {d: str(getattr(e, ATTR.get(d, d), None) or "-") for d in config.dimensions}
            req = Request(e.tenant, subject, 1, 1, 0, 0, e.user_id, e.occurred_at)  # attempt 1 was seen or not
            self.requests[key] = req
        req.attempts += 1
        req.max_attempt = max(req.max_attempt, e.attempt)
        req.nanos += event.cost_nanos
        req.tokens += tokens_of(event)
        req.last_ms = max(req.last_ms, e.occurred_at)
        self.requests.move_to_end(key)
        while len(self.requests) > config.max_requests:
            self.requests.popitem(last=False)

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        end = minute + MINUTE_MS
        for (tenant, request_id), req in self.requests.items():
            cfg = context.config_for(tenant)
            attempts = max(req.attempts, req.max_attempt)
            if attempts <= cfg.runaway_attempts or not minute <= req.last_ms < end:
                continue
            labels = {**req.subject, "request_id": request_id}
            out.append(finding("runaway_loop", tenant, labels, minute, end, _verdict(request_id, req, attempts, cfg)))
        expired = [k for k, r in self.requests.items() if r.last_ms < minute - context.config_for(k[0]).request_ttl_ms]
        for key in expired:
            del self.requests[key]
        return out

    def forget(self, tenant: str) -> None:
        drop_tenant(self.requests, tenant)

    def tracked(self) -> dict[str, int]:
        return {"requests": len(self.requests)}


def _verdict(request_id: str, req: Request, attempts: int, cfg: DetectorConfig) -> Verdict:
    return Verdict(
        True,
        "critical",
        f"request {request_id} made {attempts} attempts (limit {cfg.runaway_attempts})",
        {
            "attempts": str(attempts),
            "limit": str(cfg.runaway_attempts),
            "retry_cost_nanos": str(req.nanos),
            "retry_cost_usd": usd(req.nanos),
            "retry_tokens": str(req.tokens),
        },
        (Contributor("user_id", req.user, req.nanos, req.tokens, attempts),) if req.user else (),
        "Cap attempts per request in the client and stop retrying deterministic failures.",
    )
