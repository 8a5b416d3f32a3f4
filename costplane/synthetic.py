"""Deterministic synthetic usage traffic: realistic shapes for the demo, benchmarks and tests.

Several tenants, teams, features and users; a model mix from cheap to frontier; prompt caching on some features;
retries that resend the whole prompt; optional incidents (a retry storm, a spend spike) switched on for a time span.
Same seed, same events — so a test can compute the ground truth it expects from the very events it sent.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from costplane.publisher.event import UsageEvent

MODELS: tuple[tuple[str, str, int], ...] = (
    # provider, model, weight
    ("openai", "gpt-4o-mini", 50),
    ("openai", "gpt-4o", 15),
    ("anthropic", "claude-haiku-4-5", 20),
    ("anthropic", "claude-sonnet-4-5", 10),
    ("openai", "text-embedding-3-small", 5),
)
FEATURES = ("chat", "search-summary", "support-agent", "doc-embed", "classify")
TEAMS = ("growth", "core", "support")
PLANS = ("free", "pro", "enterprise")


@dataclass(frozen=True, slots=True)
class Incident:
    """Traffic anomaly active between two timestamps for one tenant (and feature, if given)."""

    kind: str  # "retry_storm" or "spike"
    tenant: str
    start_ms: int
    end_ms: int
    feature: str | None = None
    intensity: float = 0.5  # retry storm: share of attempts that fail; spike: extra prompt multiplier


@dataclass(slots=True)
class TrafficShape:
    """What the generator produces; defaults make a small, plausible multi-tenant workload."""

    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    users_per_tenant: int = 50
    base_retry_rate: float = 0.01
    cache_hit_share: float = 0.6
    incidents: list[Incident] = field(default_factory=list)


def _uuid7_like(rng: random.Random, millis: int) -> str:
    """A UUIDv7-formatted id from the seeded RNG (time-ordered, reproducible)."""
    rand_a = rng.getrandbits(12)
    rand_b = rng.getrandbits(62)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate(
    count: int,
    *,
    seed: int = 7,
    start_ms: int = 1_767_225_600_000,
    rate_per_s: float = 100.0,
    shape: TrafficShape | None = None,
) -> Iterator[UsageEvent]:
    """Yield ``count`` usage events (attempts), timestamps advancing at ``rate_per_s`` from ``start_ms``."""
    shape = shape or TrafficShape()
    rng = random.Random(seed)
    weights = [w for _, _, w in MODELS]
    step_ms = 1000.0 / rate_per_s
    produced = 0
    request_seq = 0
    while produced < count:
        now_ms = start_ms + int(produced * step_ms)
        tenant = rng.choice(shape.tenants)
        provider, model, _ = rng.choices(MODELS, weights)[0]
        feature = "doc-embed" if model.startswith("text-embedding") else rng.choice(FEATURES[:3] + FEATURES[4:])
        user = f"{tenant}-u{rng.randrange(shape.users_per_tenant):03d}"
        incident = next(
            (
                i
                for i in shape.incidents
                if i.tenant == tenant
                and i.start_ms <= now_ms < i.end_ms
                and (i.feature is None or i.feature == feature)
            ),
            None,
        )
        prompt = int(rng.lognormvariate(6.5, 0.8)) + 20
        if incident is not None and incident.kind == "spike":
            prompt = int(prompt * (1 + incident.intensity * 10))
        fail_rate = shape.base_retry_rate
        if incident is not None and incident.kind == "retry_storm":
            fail_rate = incident.intensity
        request_seq += 1
        request_id = f"req-{seed}-{request_seq}"
        attempt = 1
        while produced < count:
            failed = rng.random() < fail_rate and attempt < 6
            cached = int(prompt * 0.7) if feature == "support-agent" and rng.random() < shape.cache_hit_share else 0
            embedding = model.startswith("text-embedding")
            output = 0 if embedding or failed else int(rng.lognormvariate(5.0, 0.7)) + 1
            yield UsageEvent(
                event_id=_uuid7_like(rng, now_ms),
                occurred_at=now_ms,
                tenant=tenant,
                provider=provider,
                model=model,
                request_id=request_id,
                attempt=attempt,
                status=rng.choice(("error", "timeout", "rate_limited")) if failed else "ok",
                input_tokens=prompt - cached,
                cached_input_tokens=cached,
                output_tokens=output,
                operation="embedding" if embedding else "chat",
                user_id=user,
                team=rng.choice(TEAMS),
                feature=feature,
                env="prod",
                plan=PLANS[int(user[-3:]) % len(PLANS)],
                max_tokens=None if embedding else 1024,
                latency_ms=rng.randrange(80, 4000),
            )
            produced += 1
            if not failed:
                break
            attempt += 1
            now_ms += 1
