"""Load real workers from tests and read back what they made of it: publish usage events, compute the exact totals
they must add up to (from the price catalog, never from the worker), and poll the worker's API and metrics.

Shared by the worker integration tests (scale-out, chaos) so each states its scenario, not its plumbing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from costplane.config import KafkaSettings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.reports.options import ReportOptions
from costplane.streams.worker.testing import WorkerProcess

#: ``{tenant: (events, cost_nanos)}``: what ``/api/report`` spend by tenant must say.
Totals = dict[str, tuple[int, int]]

_T = TypeVar("_T")

#: Events per Kafka message (one tenant per message, as the publisher batches them).
MESSAGE_EVENTS = 50


def expected_totals(events: Iterable[UsageEvent]) -> Totals:
    """Events and cost per tenant, priced with the default catalog: each event counted once."""
    catalog = default_catalog()
    out: dict[str, list[int]] = {}
    for ev in events:
        cell = out.setdefault(ev.tenant, [0, 0])
        cell[0] += 1
        cell[1] += catalog.price_event(ev).cost_nanos
    return {t: (c, n) for t, (c, n) in out.items()}


def tokens_by_tenant(events: Iterable[UsageEvent]) -> dict[str, int]:
    """Total tokens per tenant: what a per-tenant token budget window must hold."""
    out: dict[str, int] = {}
    for ev in events:
        out[ev.tenant] = out.get(ev.tenant, 0) + ev.total_tokens
    return out


def publish(producer: Any, kafka: KafkaSettings, events: Sequence[UsageEvent], codec: UsageCodec | None = None) -> None:
    """Produce ``events`` to the usage topic as the publisher would (messages of one tenant, keyed by tenant) and
    wait for the broker to take them all."""
    codec = codec or UsageCodec.schemaless()
    by_tenant: dict[str, list[UsageEvent]] = {}
    for ev in events:
        by_tenant.setdefault(ev.tenant, []).append(ev)
    for tenant, evs in by_tenant.items():
        for i in range(0, len(evs), MESSAGE_EVENTS):
            value, headers = codec.encode_batch(tenant, evs[i : i + MESSAGE_EVENTS])
            producer.produce(kafka.topic("usage"), key=tenant.encode(), value=value, headers=headers)
            producer.poll(0)
    undelivered = producer.flush(30)
    if undelivered:
        raise RuntimeError(f"{undelivered} usage messages not delivered in 30 s")


def spend_by_tenant(worker: WorkerProcess) -> Totals:
    """``/api/report`` spend by tenant of a worker that owns ClickHouse (role sink or all)."""
    status, answer = worker.get("/api/report?" + ReportOptions.parse("spend", by=["tenant"]).to_query_string(), 30)
    if status != 200:
        raise AssertionError(f"/api/report answered {status}: {answer}")
    return {r["tenant"]: (int(r["attempts"]), int(r["cost_nanos"])) for r in answer["rows"]}


def wait_totals(worker: WorkerProcess, expected_events: int, timeout_s: float) -> Totals:
    """Poll spend by tenant until it counts ``expected_events``; then read once more a little later, so a late
    double count shows up in the answer rather than after it."""
    seen = poll_until(lambda: spend_by_tenant(worker), lambda t: _events(t) >= expected_events, timeout_s, worker)
    if _events(seen) < expected_events:
        raise AssertionError(f"only {_events(seen)} of {expected_events} events after {timeout_s} s: {seen}")
    time.sleep(2.0)
    return spend_by_tenant(worker)


def _events(totals: Totals) -> int:
    return sum(count for count, _ in totals.values())


def poll_until(
    read: Callable[[], _T], done: Callable[[_T], bool], timeout_s: float, *alive: WorkerProcess, every_s: float = 0.5
) -> _T:
    """Call ``read`` until ``done`` of its value or the deadline; returns the last value. Fails at once when one
    of the ``alive`` workers has exited (its log tail says why)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for w in alive:
            assert_running(w)
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(every_s)


def assert_running(worker: WorkerProcess) -> None:
    if worker.proc is None or worker.proc.poll() is not None:
        code = None if worker.proc is None else worker.proc.returncode
        raise AssertionError(f"worker exited ({code}):\n{worker.log_tail()}")


def metric(worker: WorkerProcess, name: str, **labels: str) -> float | None:
    """One sample of ``/metrics`` by name and exact label set (None when absent)."""
    status, text = worker.get("/metrics")
    if status != 200:
        raise AssertionError(f"/metrics answered {status}")
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in str(text).splitlines():
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return None
