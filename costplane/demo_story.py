"""The demo's story as data: its budgets, its simulated services and the calls they make (pure, seeded, no I/O).

Simulated time runs faster than the wall clock (:class:`SimClock`) so a minute-long run covers a quarter of an
hour of traffic: long enough for the detectors' per-minute judgements, a learnt baseline before the cost spike,
and a retry storm that triggers and resolves. Every service yields :class:`Call` intents; the runner executes
them through the real ``BudgetGuard`` and ``UsagePublisher``:

* ``reserve`` — the normal path: reserve the worst case, call (possibly degraded to a cheaper model), settle.
* ``check`` — a service that only asks for the stream's decision before each call (a loop, a load tool), so it
  is stopped exactly when the worker's decision lands in Redis.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from costplane.budgets import Budget, per_user_token_budgets_by_plan

MINUTE_MS = 60_000
#: Simulated minutes the run covers, whatever its wall-clock length.
SIM_MINUTES = 14
#: Shortest run that still tells the whole story (each simulated minute needs enough calls to be judged).
MIN_SECONDS = 30
DEFAULT_SECONDS = 90

Mode = Literal["reserve", "check"]


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated epoch ms for a wall-clock moment: starts ``SIM_MINUTES`` before the run and reaches the wall clock
    at its end, so every event is in the past and the last ones are live."""

    wall_start_s: float
    seconds: float

    @property
    def factor(self) -> float:
        return (SIM_MINUTES * 60 + self.seconds) / self.seconds

    @property
    def start_ms(self) -> int:
        return int(self.wall_start_s * 1000) - SIM_MINUTES * MINUTE_MS

    def at(self, wall_s: float) -> int:
        return self.start_ms + int((wall_s - self.wall_start_s) * 1000 * self.factor)

    def minute(self, wall_s: float) -> float:
        """Simulated minutes since the start of the story."""
        return (self.at(wall_s) - self.start_ms) / MINUTE_MS


@dataclass(frozen=True, slots=True)
class Call:
    """One model call attempt a service wants to make."""

    service: str
    mode: Mode
    scope: dict[str, str]
    provider: str
    model: str
    prompt_tokens: int
    output_tokens: int
    max_tokens: int = 1024
    cached_tokens: int = 0
    status: str = "ok"
    request_id: str | None = None
    attempt: int = 1
    session_id: str | None = None
    turn: int | None = None
    operation: str | None = None
    service_tier: str | None = None
    content_hash: str | None = None


def demo_budgets() -> list[Budget]:
    """A tenant's monthly USD budget with soft thresholds, per-user daily token budgets by plan, a staging cap and a
    per-feature degrade budget."""
    return [
        Budget.from_cli(
            "acme-monthly", scope="tenant=acme", period="month", limit_usd="1.00", soft="0.5,0.8", action="notify"
        ),
        *per_user_token_budgets_by_plan("acme", {"free": 60_000, "pro": 2_000_000}),
        Budget.from_cli("acme-staging-cap", scope="tenant=acme,env=staging", period="day", limit_usd="0.25"),
        Budget.from_cli(
            "globex-support-degrade",
            scope="tenant=globex,feature=support-agent",
            period="day",
            limit_usd="0.15",
            action="degrade:gpt-4o-mini",
        ),
    ]


@dataclass
class Service:
    """A simulated service: a name, calls per simulated minute, and when in the story it is active.

    Rates are in simulated time, so a shorter run makes the same calls faster and tells the same story.
    """

    name: str
    per_minute: float
    start_minute: float = 0.0
    end_minute: float = SIM_MINUTES + 1
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _due: float = 0.0

    def calls(self, minute: float, elapsed_minutes: float) -> Iterator[Call]:
        """The calls due in the last ``elapsed_minutes`` simulated minutes, at simulated ``minute``."""
        if not self.start_minute <= minute < self.end_minute:
            return
        self._due += self.per_minute * elapsed_minutes
        while self._due >= 1:
            self._due -= 1
            yield from self.one(minute)

    def one(self, minute: float) -> Iterator[Call]:
        raise NotImplementedError

    def noisy(self, mean: int, spread: float = 0.15) -> int:
        return max(1, int(mean * self.rng.uniform(1 - spread, 1 + spread)))


@dataclass
class ChatSessions(Service):
    """Steady chat whose sessions resend a growing context each turn (most of it a cached prefix)."""

    sessions: dict[str, tuple[int, int]] = field(default_factory=dict)  # session -> (turn, context tokens)
    _seq: int = 0

    def one(self, minute: float) -> Iterator[Call]:
        user = f"acme-u{self.rng.randrange(12):02d}"
        session = next((s for s in self.sessions if s.startswith(user + ":")), None)
        if session is None or self.sessions[session][0] >= 12:
            self._seq += 1
            session = f"{user}:s{self._seq}"
            self.sessions = {k: v for k, v in self.sessions.items() if not k.startswith(user + ":")}
            self.sessions[session] = (0, 400)
        turn, context = self.sessions[session]
        context += self.noisy(600)
        self.sessions[session] = (turn + 1, context)
        cached = context * 3 // 4 if turn else 0
        yield Call(
            self.name,
            "reserve",
            {"tenant": "acme", "team": "growth", "feature": "chat", "user": user, "plan": "pro", "env": "prod"},
            "openai",
            "gpt-4o-mini",
            context,
            self.noisy(250),
            max_tokens=800,
            cached_tokens=cached,
            session_id=session,
            turn=turn + 1,
        )


@dataclass
class MalformedJsonRetries(Service):
    """Invoice extraction whose model returns malformed JSON during the storm: the app retries the whole prompt."""

    storm: tuple[float, float] = (3.0, 6.0)
    _seq: int = 0

    def one(self, minute: float) -> Iterator[Call]:
        self._seq += 1
        fail = 0.6 if self.storm[0] <= minute < self.storm[1] else 0.01
        prompt = self.noisy(1800)
        for attempt in range(1, 5):
            failed = attempt < 4 and self.rng.random() < fail
            yield Call(
                self.name,
                "reserve",
                {
                    "tenant": "globex",
                    "team": "finance",
                    "feature": "invoice-extract",
                    "user": f"globex-svc-{self._seq % 3}",
                    "plan": "pro",
                    "env": "prod",
                },
                "openai",
                "gpt-4o",
                prompt,
                self.noisy(300),
                max_tokens=600,
                status="error" if failed else "ok",
                request_id=f"extract-{self._seq}",
                attempt=attempt,
            )
            if not failed:
                return


@dataclass
class RunawayLoop(Service):
    """An agent stuck in a loop for one free-plan user, asking only for the stream's decision before each call."""

    _context: int = 6000

    def one(self, minute: float) -> Iterator[Call]:
        self._context += self.noisy(300)
        yield Call(
            self.name,
            "check",
            {
                "tenant": "acme",
                "team": "growth",
                "feature": "agent-loop",
                "user": "acme-bot-7",
                "plan": "free",
                "env": "prod",
            },
            "anthropic",
            "claude-haiku-4-5",
            self._context,
            self.noisy(500),
        )


@dataclass
class ReportWriter(Service):
    """A steady report writer whose prompts balloon for a minute and a half: the cost spike."""

    spike: tuple[float, float] = (11.0, 12.5)

    def one(self, minute: float) -> Iterator[Call]:
        factor = 8 if self.spike[0] <= minute < self.spike[1] else 1
        yield Call(
            self.name,
            "reserve",
            {
                "tenant": "initech",
                "team": "analytics",
                "feature": "report-writer",
                "user": f"initech-u{self.rng.randrange(5)}",
                "plan": "pro",
                "env": "prod",
            },
            "anthropic",
            "claude-sonnet-4-5",
            self.noisy(1500, 0.05) * factor,
            self.noisy(300, 0.05),
            max_tokens=600,
        )


@dataclass
class StagingLoadTest(Service):
    """A load test against staging that runs into the staging cap (the load tool reads decisions only)."""

    def one(self, minute: float) -> Iterator[Call]:
        yield Call(
            self.name,
            "check",
            {
                "tenant": "acme",
                "team": "platform",
                "feature": "checkout-assistant",
                "user": "loadtest",
                "plan": "pro",
                "env": "staging",
            },
            "openai",
            "gpt-4o",
            self.noisy(3000),
            self.noisy(400),
        )


@dataclass
class SupportAgent(Service):
    """Support answers on gpt-4o until the feature's degrade budget answers with the cheaper model."""

    def one(self, minute: float) -> Iterator[Call]:
        yield Call(
            self.name,
            "reserve",
            {
                "tenant": "globex",
                "team": "support",
                "feature": "support-agent",
                "user": f"globex-agent-{self.rng.randrange(4)}",
                "plan": "pro",
                "env": "prod",
            },
            "openai",
            "gpt-4o",
            self.noisy(2000),
            self.noisy(300),
            max_tokens=500,
        )


@dataclass
class NightlyBatch(Service):
    """A background summarisation job on the standard tier (the batch tier would halve its cost)."""

    def one(self, minute: float) -> Iterator[Call]:
        yield Call(
            self.name,
            "reserve",
            {
                "tenant": "globex",
                "team": "data",
                "feature": "nightly-summaries",
                "user": "batch-runner",
                "plan": "pro",
                "env": "prod",
            },
            "openai",
            "gpt-4o-mini",
            self.noisy(4000),
            self.noisy(500),
            max_tokens=800,
            service_tier="standard",
        )


@dataclass
class ReEmbedder(Service):
    """A document pipeline that re-embeds the same 40 documents over and over (same content hash)."""

    def one(self, minute: float) -> Iterator[Call]:
        doc = self.rng.randrange(40)
        yield Call(
            self.name,
            "reserve",
            {
                "tenant": "initech",
                "team": "search",
                "feature": "doc-embed",
                "user": "indexer",
                "plan": "pro",
                "env": "prod",
            },
            "openai",
            "text-embedding-3-small",
            800 + doc * 20,
            0,
            max_tokens=0,
            operation="embedding",
            content_hash=f"doc-{doc:03d}",
        )


def demo_services(seed: int) -> list[Service]:
    """Every simulated service of the story, each with its own seeded randomness."""

    def rng(n: int) -> random.Random:
        return random.Random(seed * 100 + n)

    return [
        ChatSessions("chat", 20, rng=rng(1)),
        MalformedJsonRetries("invoice-extract", 16, rng=rng(2)),
        RunawayLoop("agent-loop", 15, start_minute=2.0, rng=rng(3)),
        ReportWriter("report-writer", 30, rng=rng(4)),
        StagingLoadTest("staging-loadtest", 25, start_minute=5.0, rng=rng(5)),
        SupportAgent("support-agent", 10, rng=rng(6)),
        NightlyBatch("nightly-summaries", 8, rng=rng(7)),
        ReEmbedder("doc-embed", 15, rng=rng(8)),
    ]
