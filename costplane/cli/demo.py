"""``costplane demo``: the main job on the real local stack, start to finish, for a newcomer.

Starts the stack, publishes synthetic traffic from three tenants through the real publisher (with a retry storm at
one of them), reads every message back through the codec, prices each event with the shipped catalog and prints
exact spend by tenant and feature — including what the failed attempts cost.
"""

from __future__ import annotations

import time
import uuid
from typing import cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from costplane.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo(
    events: int = typer.Option(20_000, "--events", min=100, help="How many attempts to publish."),
    as_json: bool = typer.Option(False, "--json", help="Print the attribution rows as JSON."),
) -> None:
    """Start the stack, publish synthetic traffic with a retry storm, read it back and show exact spend."""
    from confluent_kafka import Consumer, TopicPartition

    from costplane.attribution import attribute, nanos_to_usd, usd_display
    from costplane.config import KafkaSettings, load_settings
    from costplane.devstack.prereqs import MissingPrerequisite
    from costplane.devstack.stack import DevStack
    from costplane.pricing.catalog import default_catalog
    from costplane.publisher import UsageCodec, UsageEvent, UsagePublisher
    from costplane.synthetic import Incident, TrafficShape, generate

    err = console(stderr=True)
    try:
        with err.status("starting the costplane dev stack…") as spinner:
            status = DevStack.from_settings().up(progress=lambda msg: spinner.update(msg))
    except MissingPrerequisite as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(3) from None
    err.print("stack: " + ", ".join(f"{n} {'healthy' if status[n]['healthy'] else 'DOWN'}"
                                    for n in ("kafka", "redis", "clickhouse")))

    kafka = load_settings(KafkaSettings, topic_prefix=f"demo-{uuid.uuid4().hex[:8]}")
    start_ms = int(time.time() * 1000) - 10 * 60_000
    storm = Incident("retry_storm", "globex", start_ms + 120_000, start_ms + 300_000, intensity=0.5)
    traffic = list(generate(events, seed=int(time.time()), start_ms=start_ms, rate_per_s=events / 600,
                            shape=TrafficShape(incidents=[storm])))
    publisher = UsagePublisher(kafka)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                        disable=as_json)
    with progress:
        task = progress.add_task("publishing", total=len(traffic))
        for i, event in enumerate(traffic, start=1):
            publisher.emit(event)
            if i % 500 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=len(traffic))
        publisher.close()

        codec, catalog = UsageCodec.schemaless(), default_catalog()
        topic = kafka.topic("usage")
        consumer = Consumer({**kafka.confluent_config(), "group.id": f"demo-{uuid.uuid4().hex}",
                             "enable.auto.commit": False})
        read = progress.add_task("reading back", total=len(traffic))
        priced: list[tuple[UsageEvent, int, bool]] = []
        rejects = 0
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            deadline = time.monotonic() + 60
            while len({e.event_id for e, _c, _u in priced}) < len(traffic) and time.monotonic() < deadline:
                for msg in consumer.consume(200, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    decoded = codec.decode(msg.value(), cast(list[tuple[str, bytes]], msg.headers()))
                    rejects += len(decoded.rejects)
                    for ev in decoded.events:
                        cost = catalog.price_event(ev)
                        priced.append((ev, cost.cost_nanos, cost.unpriced))
                progress.update(read, completed=len({e.event_id for e, _c, _u in priced}))
        finally:
            consumer.close()

    rows = attribute(priced, ("tenant", "feature"))
    if as_json:
        print_json([{"tenant": r.key[0], "feature": r.key[1], "events": r.events, "retries": r.retries,
                     "failed": r.failed, **r.tokens, "cost_nanos": r.cost_nanos,
                     "cost_usd": nanos_to_usd(r.cost_nanos), "failed_cost_usd": nanos_to_usd(r.failed_cost_nanos)}
                    for r in rows])
    else:
        table = Table(title=f"spend by tenant × feature — {len(priced)} attempts read back from {topic}")
        for col in ("tenant", "feature", "attempts", "retries", "in tok", "out tok", "USD", "failed USD"):
            table.add_column(col, justify="left" if col in ("tenant", "feature") else "right", no_wrap=True)
        for r in rows:
            table.add_row(r.key[0], r.key[1], f"{r.events:,}", f"{r.retries:,}",
                          f"{r.tokens['input_tokens'] + r.tokens['cached_input_tokens']:,}",
                          f"{r.tokens['output_tokens'] + r.tokens['reasoning_tokens']:,}",
                          usd_display(r.cost_nanos), usd_display(r.failed_cost_nanos))
        console().print(table)
        by_tenant = attribute(priced, ("tenant",))
        worst = max(by_tenant, key=lambda r: r.retries / max(r.events, 1))
        console().print(
            f"[bold]{worst.key[0]}[/]: {worst.retries / max(worst.events, 1):.1%} of attempts were retries; failed "
            f"attempts cost ${nanos_to_usd(worst.failed_cost_nanos)} of ${nanos_to_usd(worst.cost_nanos)} — spend "
            "a success-only dashboard never shows."
        )
    if rejects:
        err.print(f"[yellow]{rejects} records were rejected by the decoder[/]")
    if len({e.event_id for e, _c, _u in priced}) < len(traffic):
        err.print("[red]not every published event was read back[/]")
        raise typer.Exit(1)
