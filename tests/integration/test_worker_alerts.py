"""The real stream worker raises alerts: publisher → Kafka → worker (detectors, budgets) → a local HTTP receiver.

* A synthetic retry storm and a spend spike, published through the real publisher with event times an hour back
  (so the worker judges the backlog minute by minute as it arrives), reach the receiver as exactly one trigger and
  one resolve per incident in Slack, PagerDuty (Events v2 rules checked) and webhook format — with the alert ids
  the pure detectors and lifecycle give for the same events, so the worker adds nothing and loses nothing.
* A budget crossing its soft threshold and then its limit gives one budget_threshold and one budget_blocked
  trigger; raising the limit after a restart of the worker lifts the block, and the new worker resolves
  budget_blocked from the alert state the old one saved in Redis.
* Undecodable messages over the dead-letter rate give one dead_letter_flood trigger, and a resolve once they stop.
* Redis cut off from the worker (a proxy in between drops it) gives one fail_open trigger, and a resolve once the
  worker writes to it again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from confluent_kafka import Consumer
from test_alert_delivery_http import KEY, Receiver
from test_alert_delivery_http import receiver as receiver  # noqa: F401 - the fixture is used by name

from costplane.config import KafkaSettings, PublisherSettings, RedisSettings, WorkerSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.event import UsageEvent
from costplane.publisher.publisher import UsagePublisher
from costplane.publisher.testing import usage_event
from costplane.streams.alerting.codec import decode_alert
from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.pagerduty import validate_pagerduty_event
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors import MINUTE_MS, Detectors
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env
from costplane.synthetic import Incident, TrafficShape, generate

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.http]

MINUTES = 45
RATE = 20.0  # events per second of event time, one tenant

StartWorker = Callable[..., tuple[WorkerProcess, dict[str, str]]]


@pytest.fixture
def start_worker(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path, receiver: Receiver
) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=2))

    def start(redis_via: RedisSettings | None = None, **alerts: Any) -> tuple[WorkerProcess, dict[str, str]]:
        env = worker_env(kafka_settings, redis_via or redis_settings, None, usage_partitions=2)
        env.update(
            {
                "COSTPLANE_ALERTS_SLACK_WEBHOOK_URL": receiver.base + "/slack",
                "COSTPLANE_ALERTS_PAGERDUTY_ROUTING_KEY": KEY,
                "COSTPLANE_ALERTS_PAGERDUTY_URL": receiver.base + "/pd",
                "COSTPLANE_ALERTS_PAGERDUTY_MIN_SEVERITY": "info",
                "COSTPLANE_ALERTS_WEBHOOK_URLS": receiver.base + "/hook",
                "COSTPLANE_ALERTS_BACKOFF_BASE_S": "0.05",
            }
        )
        env.update({f"COSTPLANE_ALERTS_{k.upper()}": str(v) for k, v in alerts.items()})
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log", role="stream").start()
        started.append(worker)
        worker.wait_ready(90)
        return worker, env

    yield start
    for worker in started:
        worker.stop()


def publish(kafka: KafkaSettings, spool: Path, events: list[UsageEvent]) -> None:
    """Emit in event-time order and keep that order on the partition: the backlog is judged minute by minute.

    ``flush()`` while the publisher's own thread is still shipping taken batches ships the rest beside them, so
    batches of one tenant can reach the broker out of order; waiting for the thread to take everything first
    keeps a single shipper for all but the last (open) batch.
    """
    publisher = UsagePublisher(kafka, load_settings(PublisherSettings, spool_dir=spool))
    try:
        assert all(publisher.emit(e) for e in events)
        deadline = time.monotonic() + 60
        while publisher.stats()["buffered"] > 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert publisher.flush(30) == 0
    finally:
        publisher.close()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log_tail()}")


def expected_alerts(events: list[UsageEvent], now_ms: int) -> list[AlertEvent]:
    """The pure pipeline on the same events: detectors judged per minute, the lifecycle on event time."""
    catalog = default_catalog()
    detectors = Detectors()
    lifecycle = AlertLifecycle(LifecycleConfig())  # the worker runs with the default timing too
    out: list[AlertEvent] = []
    for _, batch in itertools.groupby(events, key=lambda e: e.occurred_at // MINUTE_MS):
        priced = []
        for e in batch:
            cost = catalog.price_event(e)
            priced.append(PricedEvent(e, cost.cost_nanos, cost.price_version, unpriced=cost.unpriced))
        detectors.observe(priced)
        for minute, findings in detectors.evaluate_minutes(now_ms):
            out += lifecycle.observe(findings, minute + MINUTE_MS)
    return out


def actions_by_key(alerts: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in alerts:
        if not a["escalated"]:
            out.setdefault(a["dedup_key"], []).append(a["action"])
    return out


def test_storm_and_spike_through_the_real_worker_page_once_and_resolve_once(
    start_worker: StartWorker,
    kafka_settings: KafkaSettings,
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    worker, _ = start_worker()
    start = (int(time.time() * 1000) // MINUTE_MS - MINUTES - 6) * MINUTE_MS  # a backlog ending 6 minutes ago
    shape = TrafficShape(
        tenants=("acme",),
        incidents=[
            Incident(
                "retry_storm", "acme", start + 15 * MINUTE_MS, start + 20 * MINUTE_MS, feature="chat", intensity=0.5
            ),
            Incident(
                "spike", "acme", start + 25 * MINUTE_MS, start + 29 * MINUTE_MS, feature="support-agent", intensity=0.5
            ),
        ],
    )
    events = list(generate(int(MINUTES * 60 * RATE), seed=11, start_ms=start, rate_per_s=RATE, shape=shape))
    expected = expected_alerts(events, int(time.time() * 1000))
    storm = sorted({a.dedup_key for a in expected if a.kind == "retry_storm" and a.subject.get("feature") == "chat"})
    spike = sorted(
        {a.dedup_key for a in expected if a.kind == "cost_spike" and a.subject.get("feature") == "support-agent"}
    )
    assert storm and spike, sorted({a.dedup_key for a in expected})
    keys = storm + spike
    want = [(a.dedup_key, a.action, a.alert_id) for a in expected if a.dedup_key in keys]

    publish(kafka_settings, tmp_path / "spool", events)

    def received() -> list[dict[str, Any]]:
        return [b["alert"] for b in receiver.bodies("/hook") if b["alert"]["dedup_key"] in keys]

    wait_for(lambda: len(received()) >= len(want), 180, f"{len(want)} alerts at the webhook", worker)
    time.sleep(3)  # anything extra would arrive now
    hook = received()
    got = [(a["dedup_key"], a["action"], a["alert_id"]) for a in hook]
    # Per key in order (keys of one minute come in set order, which differs between processes).
    assert sorted(got, key=lambda x: x[0]) == sorted(want, key=lambda x: x[0]), (got, want)
    for key in keys:
        assert actions_by_key(hook)[key] == ["trigger", "resolve"], key
    assert all(a["occurred_at"] < start + MINUTES * MINUTE_MS for a in hook)  # event time, not the worker's clock

    wait_for(
        lambda: (
            len([b for b in receiver.bodies("/slack") if any(f"`{k}`" in str(b["blocks"]) for k in keys)]) >= len(want)
        ),
        30,
        "the Slack messages",
        worker,
    )
    for key in keys:
        slack = [b["text"] for b in receiver.bodies("/slack") if f"`{key}`" in str(b["blocks"])]
        assert [t.split("[")[1].split("]")[0] for t in slack if "[ESCALATED]" not in t] == ["TRIGGERED", "RESOLVED"]
    pd = receiver.bodies("/pd")
    assert pd and all(validate_pagerduty_event(b) == [] for b in pd)
    for key in keys:
        assert [
            b["event_action"]
            for b in pd
            if b["dedup_key"] == key and not b.get("payload", {}).get("custom_details", {}).get("escalated")
        ] == ["trigger", "resolve"]


def make_event(tokens: int) -> UsageEvent:
    return usage_event(input_tokens=tokens, output_tokens=0, user_id="u1", feature="chat")


def cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_budget_crossing_blocks_with_one_trigger_and_raising_it_resolves_after_a_restart(
    start_worker: StartWorker,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    worker, env = start_worker(resolve_after_s=1)
    budget = ["budget", "set", "acme-user-day", "--scope", "tenant=acme,user=*", "--period", "day", "--soft", "0.5"]
    cli(env, *budget, "--limit-tokens", "1000", "--action", "block")

    def kinds(path: str) -> list[tuple[str, str]]:
        if path == "/pd":
            return [(b["dedup_key"].split("|")[0], b["event_action"]) for b in receiver.bodies(path)]
        return [(b["alert"]["kind"], b["alert"]["action"]) for b in receiver.bodies(path)]

    publish(kafka_settings, tmp_path / "spool1", [make_event(300), make_event(300)])  # 600 of 1000: soft 0.5
    wait_for(lambda: ("budget_threshold", "trigger") in kinds("/hook"), 30, "the threshold alert", worker)
    publish(kafka_settings, tmp_path / "spool2", [make_event(500)])  # 1100: blocked
    wait_for(lambda: ("budget_blocked", "trigger") in kinds("/hook"), 30, "the block alert", worker)
    blocked = next(b["alert"] for b in receiver.bodies("/hook") if b["alert"]["kind"] == "budget_blocked")
    assert blocked["severity"] == "critical" and blocked["subject"]["member"] == "tenant=acme,user=u1"
    assert blocked["numbers"]["spent"] == "1100" and blocked["numbers"]["limit"] == "1000"

    # A restart while blocked: the stopping worker saves the tenant's alert state, the next one continues it.
    assert worker.stop() == 0
    state = json.loads(
        redis.Redis.from_url(redis_settings.url.get_secret_value()).get(
            f"{redis_settings.key_prefix}:{{acme}}:alerts:state"
        )
        or b"{}"
    )
    assert [v["status"] for k, v in state["own"].items() if k.startswith("budget_blocked|")] == ["open"]
    worker, env = start_worker(resolve_after_s=1)

    cli(env, *budget, "--limit-tokens", "5000")  # raised: the new worker lifts the block and resolves the alert
    wait_for(lambda: ("budget_blocked", "resolve") in kinds("/hook"), 60, "the block to resolve", worker)
    time.sleep(3)  # anything extra would arrive now
    for path in ("/hook", "/pd"):
        assert kinds(path) == [
            ("budget_threshold", "trigger"),
            ("budget_blocked", "trigger"),
            ("budget_blocked", "resolve"),
        ], path
    assert all(validate_pagerduty_event(b) == [] for b in receiver.bodies("/pd"))
    slack = [b["text"] for b in receiver.bodies("/slack")]
    assert [t.split("]")[0] + "] " + t.split()[3] for t in slack] == [
        ":warning: [TRIGGERED] budget_threshold",
        ":rotating_light: [TRIGGERED] budget_blocked",
        ":white_check_mark: [RESOLVED] budget_blocked",
    ]
    # The alerts topic is the record of truth: the same three events, written before delivery, keyed by tenant.
    consumer = Consumer(
        {**kafka_settings.confluent_config(), "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka_settings.topic("alerts")])
    records: list[tuple[bytes | None, AlertEvent]] = []
    deadline = time.monotonic() + 30
    while len(records) < 3 and time.monotonic() < deadline:
        for msg in consumer.consume(10, timeout=0.5):
            if not msg.error():
                records.append((msg.key(), decode_alert(msg.value(), msg.headers())))
    consumer.close()
    assert [(k, a.kind, a.action) for k, a in records] == [
        (b"acme", "budget_threshold", "trigger"),
        (b"acme", "budget_blocked", "trigger"),
        (b"acme", "budget_blocked", "resolve"),
    ]
    assert [a.alert_id for _, a in records] == [b["alert"]["alert_id"] for b in receiver.bodies("/hook")]


def test_a_flood_of_dead_letters_triggers_once_and_resolves_when_it_stops(
    start_worker: StartWorker, kafka_settings: KafkaSettings, receiver: Receiver
) -> None:
    from confluent_kafka import Producer

    worker, _ = start_worker(resolve_after_s=1, dead_letters_per_minute=60, dead_letter_window_s=5)
    producer = Producer(kafka_settings.confluent_config())
    for i in range(20):  # 20 in 5 s = 240 per minute, over the 60 (and not ten times over: a warning)
        producer.produce(kafka_settings.topic("usage"), key=b"acme", value=b"\x00not avro %d" % i)
    assert producer.flush(10) == 0

    def floods() -> list[dict[str, Any]]:
        return [b["alert"] for b in receiver.bodies("/hook") if b["alert"]["kind"] == "dead_letter_flood"]

    wait_for(lambda: [a for a in floods() if a["action"] == "resolve"], 60, "the flood to resolve", worker)
    time.sleep(2)
    got = floods()
    assert [(a["action"], a["tenant"], a["severity"]) for a in got] == [
        ("trigger", "acme", "warning"),
        ("resolve", "acme", "warning"),
    ]
    dead = int(got[0]["numbers"]["dead_letters"])  # as many as the worker had read at that evaluation
    assert 5 <= dead <= 20 and got[0]["numbers"]["per_minute"] == str(dead * 12)
    assert [c["value"] for c in got[0]["contributors"]] == ["unknown_schema"]  # no schema headers at all


class CuttableProxy:
    """A TCP proxy to Redis on 127.0.0.1 that can drop every connection and refuse new ones, then come back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.lock = threading.Lock()
        self.live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # the other side (or cut()) closed it: the pump ends, which is the point
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_redis_cut_off_from_the_worker_is_one_fail_open_trigger_and_one_resolve(
    start_worker: StartWorker,
    redis_settings: RedisSettings,
    receiver: Receiver,  # noqa: F811
    kafka_settings: KafkaSettings,
    tmp_path: Path,
) -> None:
    url = urlsplit(redis_settings.url.get_secret_value())
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 6379)
    try:
        via_proxy = load_settings(
            RedisSettings, url=f"redis://127.0.0.1:{proxy.port}{url.path}", key_prefix=redis_settings.key_prefix
        )
        worker, env = start_worker(redis_via=via_proxy, resolve_after_s=1)
        cli(
            env,
            "budget",
            "set",
            "acme-user-day",
            "--scope",
            "tenant=acme,user=*",
            "--period",
            "day",
            "--limit-tokens",
            "1000000",
            "--action",
            "block",
        )
        publish(kafka_settings, tmp_path / "s1", [make_event(10)])  # a counter write that succeeds
        time.sleep(3)
        proxy.cut()
        publish(kafka_settings, tmp_path / "s2", [make_event(10)])  # its counter write fails: a fail-open

        def fail_opens() -> list[tuple[str, str, str]]:
            return [
                (b["alert"]["action"], b["alert"]["tenant"], b["alert"]["severity"])
                for b in receiver.bodies("/hook")
                if b["alert"]["kind"] == "fail_open"
            ]

        wait_for(lambda: fail_opens(), 30, "the fail_open trigger", worker)
        proxy.restore()
        publish(kafka_settings, tmp_path / "s3", [make_event(10)])  # Redis answers again
        wait_for(lambda: ("resolve", "*", "warning") in fail_opens(), 30, "the fail_open resolve", worker)
        time.sleep(2)
        assert fail_opens() == [("trigger", "*", "warning"), ("resolve", "*", "warning")]
        trigger = next(b["alert"] for b in receiver.bodies("/hook") if b["alert"]["kind"] == "fail_open")
        assert int(trigger["numbers"]["failed_writes"]) >= 1 and int(trigger["numbers"]["skipped_counter_updates"]) >= 1
    finally:
        proxy.close()
