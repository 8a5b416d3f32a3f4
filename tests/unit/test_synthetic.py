"""The synthetic traffic generator is deterministic and shapes incidents as asked."""

from __future__ import annotations

from costplane.publisher.event import STATUSES
from costplane.synthetic import Incident, TrafficShape, generate


def test_same_seed_same_events_and_unique_ids() -> None:
    first = list(generate(2000, seed=3))
    assert first == list(generate(2000, seed=3))
    assert first != list(generate(2000, seed=4))
    assert len({e.event_id for e in first}) == 2000
    assert all(e.status in STATUSES and e.input_tokens >= 0 and e.attempt >= 1 for e in first)


def test_retries_share_request_id_and_count_up() -> None:
    events = list(generate(3000, seed=5, shape=TrafficShape(base_retry_rate=0.3)))
    by_request: dict[str, list[int]] = {}
    for e in events:
        by_request.setdefault(e.request_id, []).append(e.attempt)
    retried = [a for a in by_request.values() if len(a) > 1]
    assert retried and all(a == list(range(1, len(a) + 1)) for a in retried)


def test_retry_storm_raises_the_retry_share_only_inside_its_window() -> None:
    start = 1_767_225_600_000
    storm = Incident("retry_storm", "acme", start + 60_000, start + 120_000, intensity=0.6)
    events = list(generate(30_000, seed=1, start_ms=start, rate_per_s=200, shape=TrafficShape(incidents=[storm])))

    def retry_share(inside: bool) -> float:
        sel = [e for e in events if e.tenant == "acme" and (storm.start_ms <= e.occurred_at < storm.end_ms) == inside]
        return sum(e.attempt > 1 for e in sel) / len(sel)

    assert retry_share(True) > 0.3 > 0.05 > retry_share(False)


def test_every_synthetic_model_is_priced_by_the_shipped_catalog() -> None:
    from costplane.pricing.catalog import default_catalog
    from costplane.synthetic import MODELS

    catalog = default_catalog()
    assert [m for p, m, _w in MODELS if not catalog.is_priced(p, m)] == []
