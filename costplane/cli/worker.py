"""``costplane worker``, ``costplane topics create`` and ``costplane dlq inspect|replay``."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any, cast

import typer

from costplane.cli.output import console, print_json

topics_app = typer.Typer(help="Kafka topics of the control plane.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic: what was rejected, why, and replaying it.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(topics_app, name="topics")
    app.add_typer(dlq_app, name="dlq")


def worker(
    role: Annotated[
        str | None, typer.Option("--role", help="stream, sink or all (default: COSTPLANE_WORKER_ROLE, else all).")
    ] = None,
    web_port: Annotated[int | None, typer.Option("--web-port", help="Health/metrics/report port.")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="Faust log level.")] = "WARNING",
) -> None:
    """Run the stream worker: price, count budget windows, write decisions, dead-letter bad input, fill ClickHouse.

    Exit status 2: invalid configuration; 3: the invalid-event ratio passed COSTPLANE_WORKER_INVALID_RATIO_LIMIT
    (see the message); 4: a ClickHouse sink stopped on a non-retryable error; 5: another process owns the chDB
    directory.
    """
    from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
    from costplane.streams.pipeline.fatal import WorkerStopped
    from costplane.streams.sink.errors import DirectoryOwned
    from costplane.streams.worker.run import run_worker

    overrides: dict[str, Any] = {}
    if role is not None:
        overrides["role"] = role
    if web_port is not None:
        overrides["web_port"] = web_port
    settings = load_settings(WorkerSettings, **overrides)
    try:
        run_worker(
            load_settings(KafkaSettings),
            load_settings(RedisSettings),
            load_settings(ClickHouseSettings),
            settings,
            loglevel=loglevel,
        )
    except DirectoryOwned as exc:
        typer.secho(
            f"costplane worker: {exc}. Run this process with --role stream, or stop the owner.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(5) from None
    except WorkerStopped as exc:  # stopped on purpose, in order: the status says why (docs/operations.md)
        sys.stderr.write(f"costplane worker: {exc}\n")
        sys.stderr.flush()
        raise typer.Exit(exc.exit_code) from None


@topics_app.command("create")
def topics_create(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Create the usage, backfill, DLQ, budgets (compacted), decisions and alerts topics if missing."""
    from costplane.config import KafkaSettings, WorkerSettings, load_settings
    from costplane.streams.topics import create_topics, topic_specs

    kafka, worker_settings = load_settings(KafkaSettings), load_settings(WorkerSettings)
    result = create_topics(kafka, worker_settings)
    if json_out:
        print_json(
            [
                {"topic": s.name, "partitions": s.partitions, "config": s.config, "status": result.get(s.name)}
                for s in topic_specs(kafka, worker_settings)
            ]
        )
        return
    for spec in topic_specs(kafka, worker_settings):
        console().print(
            f"{spec.name}: {result.get(spec.name)} ({spec.partitions} partitions"
            + (f", {spec.config}" if spec.config else "")
            + ")"
        )


def _read_dlq(limit: int | None, timeout_s: float) -> list[tuple[Any, ...]]:
    """Every DLQ record from the beginning (up to ``limit``), without joining a consumer group."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from costplane.config import KafkaSettings, load_settings

    kafka = load_settings(KafkaSettings)
    topic = kafka.topic("usage.dlq")
    consumer = Consumer({**kafka.confluent_config(), "group.id": "costplane-dlq-reader", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return []
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign(tps)
        out: list[tuple[Any, ...]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline and (limit is None or len(out) < limit):
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                part, off = int(msg.partition() or 0), int(msg.offset() or 0)
                out.append((msg.key(), msg.value(), list(msg.headers() or []), part, off))
                if off + 1 >= ends[part]:
                    done.add(part)
        return out[:limit] if limit is not None else out
    finally:
        consumer.close()


@dlq_app.command("inspect")
def dlq_inspect(
    limit: Annotated[int, typer.Option("--limit", help="At most this many records.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Show dead letters: where each came from (topic/partition/offset), why (reason, message) and the payload."""
    from rich.table import Table

    from costplane.streams.dlq import describe

    rows = [describe(k, v, h, p, o) for k, v, h, p, o in _read_dlq(limit, timeout_s=20)]
    if json_out:
        print_json(rows)
        return
    table = Table("source", "reason", "class", "message", "tenant")
    for r in rows:
        payload = r["payload"] if isinstance(r["payload"], dict) else {}
        table.add_row(
            f"{r['topic']}[{r['partition']}]@{r['offset']}",
            str(r["reason"]),
            str(r["error_class"]),
            str(r["message"])[:80],
            str(payload.get("tenant") or r["key"] or ""),
        )
    console().print(table)
    console().print(f"{len(rows)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[str | None, typer.Option("--reason", help="Only records with this reason.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be replayed; publish nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Re-validate every dead letter and publish the ones that are valid now to the usage topic.

    Fix a producer (or the worker's limits, e.g. the clock-skew bound), then replay: records still invalid are
    counted and left on the DLQ. The sink deduplicates by event_id, so replaying twice changes no total.
    """
    from confluent_kafka import Producer

    from costplane.config import KafkaSettings, WorkerSettings, load_settings
    from costplane.publisher.codec import UsageCodec
    from costplane.publisher.jsonio import event_from_json_dict
    from costplane.publisher.validation import InvalidEvent, validate_event
    from costplane.streams.dlq import H_CONTENT_TYPE, H_REASON, JSON_EVENT

    kafka, ws = load_settings(KafkaSettings), load_settings(WorkerSettings)
    codec = UsageCodec.schemaless()
    producer = Producer(kafka.confluent_config())
    now_ms = int(time.time() * 1000)
    replayed = still_invalid = 0
    for _key, value, headers, _p, _o in _read_dlq(None, timeout_s=60):
        h = dict(headers)
        if reason is not None and h.get(H_REASON, b"").decode() != reason:
            continue
        events = []
        if h.get(H_CONTENT_TYPE) == JSON_EVENT:
            try:
                ev = event_from_json_dict(json.loads(value), validate=False)
                validate_event(ev, now_ms=now_ms, max_clock_skew_ms=ws.max_clock_skew_ms)
                events.append(ev)
            except (InvalidEvent, ValueError, TypeError):
                still_invalid += 1
                continue
        else:
            original = [(k, v) for k, v in headers if not k.startswith("dlq-")]
            decoded = codec.decode(value, original, now_ms=now_ms, max_clock_skew_ms=ws.max_clock_skew_ms)
            events.extend(decoded.events)
            still_invalid += len(decoded.rejects)
        for ev in events:
            replayed += 1
            if not dry_run:
                body, hdrs = codec.encode_batch(ev.tenant, [ev])
                producer.produce(
                    kafka.topic("usage"),
                    key=ev.tenant.encode(),
                    value=body,
                    headers=cast(list[tuple[str, str | bytes | None]], hdrs),
                )
                producer.poll(0)
    if not dry_run:
        producer.flush(30)
    summary = {"replayed": replayed, "still_invalid": still_invalid, "dry_run": dry_run}
    if json_out:
        print_json(summary)
    else:
        suffix = " (dry run)" if dry_run else ""
        console().print(f"replayed {replayed} event(s); {still_invalid} still invalid{suffix}")
    if still_invalid and not replayed:
        sys.exit(1)
