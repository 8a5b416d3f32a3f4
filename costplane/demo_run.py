"""Run the demo's story on the real stack: workers, budgets, a webhook receiver, the services, the read-back.

Everything the run starts (two worker processes, the receiver) is stopped in ``finally``; the local stack is left
up. Each run has its own topic prefix, Redis key prefix and ClickHouse database, so runs never mix and a test can
check one run's totals exactly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costplane.demo_receiver import AlertReceiver
from costplane.demo_story import Call, SimClock, demo_budgets, demo_services
from costplane.publisher import UsageEvent, UsagePublisher

DecisionRow = dict[str, Any]


class DemoError(RuntimeError):
    """A run that cannot go on (bad input, occupied port, a stack or worker that cannot start): one line."""


class RecordingPublisher(UsagePublisher):
    """The real publisher, keeping every event it accepted: the demo's own record of what it published."""

    def __init__(self, *args: Any, on_event: Callable[[UsageEvent], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_event = on_event

    def emit(self, event: UsageEvent) -> bool:
        accepted = super().emit(event)
        if accepted:
            self._on_event(event)
        return accepted


@dataclass
class Tally:
    """What the live display shows and the summary reports."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    sim_minute: float = 0.0
    events: list[UsageEvent] = field(default_factory=list)
    spend_nanos: int = 0
    blocked: int = 0
    blocked_by_service: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    decisions: list[DecisionRow] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "starting"
    recent_rate: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class DemoRun:
    """Where one run keeps its names and files."""

    run_id: str
    out_dir: Path

    @classmethod
    def new(cls, base: Path) -> DemoRun:
        run_id = uuid.uuid4().hex[:8]
        out = base / f"demo-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{run_id}"
        out.mkdir(parents=True, exist_ok=True)
        return cls(run_id, out)


def http_json(url: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - the demo's own loopback worker
        return json.loads(response.read())


def publish_budgets(kafka: Any, budgets: list[Any]) -> None:
    """Write the demo's budgets to its budgets topic, as ``costplane budget apply`` does."""
    from confluent_kafka import Producer

    producer = Producer({**kafka.confluent_config(), "acks": "all", "enable.idempotence": True})
    for budget in budgets:
        stored = budget.model_copy(update={"version": 1, "updated_at_ms": int(time.time() * 1000)})
        producer.produce(kafka.topic("budgets"), key=budget.id.encode(), value=stored.to_json().encode())
    if producer.flush(30):
        raise DemoError("the budgets could not be written to Kafka")


def execute(call: Call, guard: Any, publisher: UsagePublisher, tally: Tally) -> None:
    """One call through the real guard and publisher (never raises: the guard and publisher do not)."""
    fields: dict[str, Any] = {"status": call.status, "attempt": call.attempt}
    for name in ("request_id", "session_id", "turn", "operation", "service_tier", "content_hash"):
        value = getattr(call, name)
        if value is not None:
            fields[name] = value
    usage = {
        "input_tokens": call.prompt_tokens - call.cached_tokens,
        "cached_input_tokens": call.cached_tokens,
        "output_tokens": call.output_tokens,
    }
    if call.mode == "check":
        if not guard.check(call.scope).allowed:
            tally.blocked += 1
            tally.blocked_by_service[call.service] = tally.blocked_by_service.get(call.service, 0) + 1
            return
        scope = dict(call.scope)
        publisher.record(
            user_id=scope.pop("user"), provider=call.provider, model=call.model, **scope, **usage, **fields
        )
        return
    with guard.reserve(
        call.scope,
        provider=call.provider,
        model=call.model,
        prompt_tokens=call.prompt_tokens,
        max_tokens=call.max_tokens,
    ) as reservation:
        if not reservation.allowed:
            tally.blocked += 1
            tally.blocked_by_service[call.service] = tally.blocked_by_service.get(call.service, 0) + 1
            return
        if reservation.model != call.model:
            tally.degraded += 1
        reservation.settle(usage, publisher=publisher, **fields)


def decisions_of(records: list[dict[str, Any]]) -> list[DecisionRow]:
    """The standing decisions among the worker's records (oldest first; lifts and notices left out)."""
    seen: set[tuple[str, str, str, str]] = set()
    out: list[DecisionRow] = []
    for r in sorted(records, key=lambda r: int(r.get("at_ms") or 0)):
        key = (str(r.get("tenant")), str(r.get("budget_id")), str(r.get("member")), str(r.get("action")))
        if r.get("type") == "decision" and key not in seen:
            seen.add(key)
            out.append(
                {
                    "tenant": key[0],
                    "budget_id": key[1],
                    "member": key[2],
                    "action": key[3],
                    "reason": r.get("reason"),
                    "at_ms": r.get("at_ms"),
                }
            )
    return out


def simulate(
    seconds: float,
    seed: int,
    guard: Any,
    publisher: UsagePublisher,
    clock: SimClock,
    tally: Tally,
    poll: Callable[[], None],
    refresh: Callable[[], None],
) -> None:
    """Run every service for ``seconds`` of wall time, ticking 20 times a second; poll the worker every second."""
    services = demo_services(seed)
    last_minute = 0.0
    next_poll = time.monotonic() + 1.0
    window: list[tuple[float, int]] = []
    end = clock.wall_start_s + seconds
    tally.phase = "services running"
    while (now := time.time()) < end:
        minute = clock.minute(now)
        for service in services:
            for call in service.calls(minute, minute - last_minute):
                execute(call, guard, publisher, tally)
        last_minute = minute
        tally.sim_minute = minute
        mono = time.monotonic()
        window = [(t, n) for t, n in window if mono - t <= 5.0] + [(mono, len(tally.events))]
        if len(window) > 1:
            tally.recent_rate = (window[-1][1] - window[0][1]) / max(window[-1][0] - window[0][0], 1e-6)
        if mono >= next_poll:
            poll()
            next_poll = mono + 1.0
        refresh()
        time.sleep(0.05)


def sink_totals(sink_url: str) -> tuple[int, int]:
    """(attempts, cost_nanos) the sink has written to ClickHouse, through its ``/api/report``."""
    from costplane.cli.report import fetch_remote
    from costplane.reports.options import ReportOptions

    answer = fetch_remote(sink_url, ReportOptions.parse("spend", by=["tenant"], since="2d"))
    rows = answer["rows"]
    return sum(int(r["attempts"]) for r in rows), sum(int(r["cost_nanos"]) for r in rows)


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(step_s)
    return False


def worker_failure(proc: Any, role: str) -> DemoError:
    """One line naming why a worker did not come up (its log's last meaningful line)."""
    tail = [ln for ln in proc.log_tail(2000).splitlines() if ln.strip()]
    code = proc.proc.poll() if proc.proc is not None else None
    if code == 5:
        return DemoError(
            f"the {role} worker could not take the ClickHouse directory: another process owns it "
            "(set COSTPLANE_CLICKHOUSE_CHDB_PATH to another directory)"
        )
    return DemoError(f"the {role} worker did not start: {tail[-1] if tail else 'no output'}")


def receiver_on(port: int) -> AlertReceiver:
    try:
        return AlertReceiver(port).start()
    except OSError as exc:
        raise DemoError(f"port {port} on 127.0.0.1 cannot be used for the alert receiver: {exc.strerror}") from None


def write_events(path: Path, events: list[UsageEvent]) -> None:
    """Every published event as a JSON line: the run's own record, beside its report."""
    with path.open("w") as out:
        for event in events:
            out.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")


def services_published(events: list[UsageEvent]) -> dict[str, int]:
    """Attempts per feature (each simulated service has its own feature)."""
    out: dict[str, int] = {}
    for e in events:
        out[e.feature or "-"] = out.get(e.feature or "-", 0) + 1
    return out


def fetch_report_rows(sink_url: str) -> Callable[[Any], Any]:
    """A report runner over the sink worker's ``/api/report`` (it owns the embedded ClickHouse)."""
    from costplane.cli.report import fetch_remote
    from costplane.streams.sink.query import ReportResult

    def run(options: Any) -> Any:
        return ReportResult.from_json(fetch_remote(sink_url, options))

    return run


def safe_http_json(url: str) -> Any:
    try:
        return http_json(url)
    except (OSError, ValueError, urllib.error.URLError):
        return None


@dataclass
class Outcome:
    """What a finished run read back: the JSON summary's fields and the closing story's numbers."""

    run: DemoRun
    tally: Tally
    total_cost_nanos: int
    report_html: Path
    story: dict[str, Any]
    redis_prefix: str
    topic_prefix: str

    def summary(self) -> dict[str, Any]:
        return {
            "events_published": len(self.tally.events),
            "total_cost_nanos": self.total_cost_nanos,
            "decisions": [{k: d[k] for k in ("tenant", "budget_id", "member", "action")} for d in self.tally.decisions],
            "guard_blocked_calls": self.tally.blocked,
            "alerts": [
                {"kind": a.get("kind"), "tenant": a.get("tenant"), "state": a.get("action")} for a in self.tally.alerts
            ],
            "report_html": str(self.report_html),
        }


def run_demo(
    seconds: float,
    seed: int,
    port: int,
    base_dir: Path,
    progress: Callable[[str], None],
    refresh: Callable[[Tally], None],
    write_report: Callable[[Callable[[Any], Any], dict[str, Any], Path], None],
) -> Outcome:
    """The whole loop; raises :class:`DemoError` (one line) when it cannot run. Stops what it started."""
    from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
    from costplane.devstack.prereqs import MissingPrerequisite
    from costplane.devstack.stack import DevStack
    from costplane.enforcers import BudgetGuard, RedisBudgetStore
    from costplane.pricing.catalog import default_catalog
    from costplane.streams.topics import create_topics
    from costplane.streams.worker.testing import WorkerProcess, worker_env

    receiver = receiver_on(port)  # first: an occupied port stops the run before anything else has started
    workers: list[WorkerProcess] = []
    publisher: RecordingPublisher | None = None
    try:
        progress("starting the local stack (Kafka, Redis, ClickHouse)…")
        try:
            status = DevStack.from_settings().up(progress=progress)
        except (MissingPrerequisite, OSError, RuntimeError, TimeoutError) as exc:
            raise DemoError(f"the local stack cannot start: {str(exc).splitlines()[0]}") from None
        run = DemoRun.new(base_dir)
        kafka = load_settings(
            KafkaSettings,
            bootstrap_servers=status["kafka"]["bootstrap"],
            topic_prefix=f"{load_settings(KafkaSettings).topic_prefix}-demo-{run.run_id}",
        )
        redis_settings = load_settings(RedisSettings, url=status["redis"]["url"], key_prefix=f"demo-{run.run_id}")
        clickhouse = load_settings(ClickHouseSettings, database=f"demo_{run.run_id}")
        create_topics(kafka, load_settings(WorkerSettings))
        env = worker_env(
            kafka, redis_settings, clickhouse, data_dir=run.out_dir / "worker", sink_max_age_s=0.5, drift_check_s=5
        )
        env.update(
            {
                "COSTPLANE_ALERTS_WEBHOOK_URLS": receiver.url,
                "COSTPLANE_ALERTS_RESOLVE_AFTER_S": "60",
                "COSTPLANE_ALERTS_EVALUATE_INTERVAL_S": "1",
                "COSTPLANE_LOG_LEVEL": "WARNING",
            }
        )
        progress("starting the stream and sink workers (migrations run as the sink opens ClickHouse)…")
        stream = WorkerProcess(env, run.out_dir / "stream-worker.log", role="stream").start()
        workers.append(stream)
        sink = WorkerProcess(env, run.out_dir / "sink-worker.log", role="sink").start()
        workers.append(sink)
        progress("applying the demo budgets…")
        publish_budgets(kafka, demo_budgets())
        for proc, role in ((stream, "stream"), (sink, "sink")):
            try:
                proc.wait_ready(120)
            except (RuntimeError, TimeoutError):
                raise worker_failure(proc, role) from None
        store = RedisBudgetStore.from_url(
            redis_settings.url.get_secret_value(), prefix=redis_settings.key_prefix, timeout_s=0.5
        )
        if not wait_until(lambda: all(store.load_budgets(t) for t in ("acme", "globex")), 30):
            raise DemoError("the stream worker did not publish the demo budgets to Redis within 30 s")
        guard = BudgetGuard(store)
        catalog = default_catalog()
        tally = Tally(seconds=seconds)

        def on_event(event: UsageEvent) -> None:
            tally.events.append(event)
            tally.spend_nanos += catalog.price_event(event).cost_nanos

        wall_start = time.time()
        clock = SimClock(wall_start, seconds)
        publisher = RecordingPublisher(kafka, clock=lambda: clock.at(time.time()) / 1000, on_event=on_event)

        def poll() -> None:
            records = safe_http_json(f"{stream.url}/api/decisions/recent?limit=1000")
            if isinstance(records, list):
                tally.decisions = decisions_of(records)
            tally.alerts = receiver.received()

        tally.started = time.monotonic()
        simulate(seconds, seed, guard, publisher, clock, tally, poll, lambda: refresh(tally))
        tally.phase = "flushing the publisher"
        refresh(tally)
        publisher.flush(30)
        tally.phase = "waiting for ClickHouse to hold every event"
        refresh(tally)
        published = len(tally.events)
        if not wait_until(lambda: sink_totals(sink.url)[0] >= published, 60):
            raise DemoError(f"ClickHouse did not receive all {published} events within 60 s (see {sink.log_path})")
        total_cost = sink_totals(sink.url)[1]
        time.sleep(2.0)  # the stream role's last batches and the alert deliveries
        poll()
        tally.phase = "writing the report"
        refresh(tally)
        status_rows = safe_http_json(f"{sink.url}/api/budgets/status?reconcile=1") or []
        story = {
            "budget_status": status_rows,
            "decisions": tally.decisions,
            "alerts": tally.alerts,
            "blocked_by_service": tally.blocked_by_service,
            "degraded": tally.degraded,
            "services": services_published(tally.events),
        }
        report = run.out_dir / "report.html"
        write_report(fetch_report_rows(sink.url), story, report)
        write_events(run.out_dir / "events.jsonl", tally.events)
        tally.phase = "done"
        return Outcome(run, tally, total_cost, report, story, redis_settings.key_prefix, kafka.topic_prefix)
    finally:
        if publisher is not None:
            publisher.close(timeout=10)
        for proc in workers:
            proc.stop(timeout_s=30)
        receiver.stop()
