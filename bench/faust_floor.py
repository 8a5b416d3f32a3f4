"""The worker benchmark's second floor: a Faust app that only takes and decodes, as the worker's agent does.

Same transport (``kafka://``), same raw serializers, same ``take_events`` batches and the same decode call as
the stream pipeline's first step (``streams/pipeline/decode.py``), and nothing after the decode: no dedup,
pricing, windows, Redis or sink. What it reaches is the most any Faust worker can do with these messages on this
machine, so the worker's rate is read against it as well as against the bare aiokafka floor.

Run by ``bench.bench_worker`` (``python -m bench.faust_floor TOPIC EVENTS RESULT_FILE``); it writes
``{"events_per_s": …, "events": …}`` to ``RESULT_FILE`` once it has decoded ``EVENTS`` events, then exits.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import faust

from costplane.config import KafkaSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.streams.pipeline.validity import decode_record, timestamp_ms


def build(topic_name: str, events: int, result: str, data_dir: str) -> faust.App:
    kafka = load_settings(KafkaSettings)
    worker = load_settings(WorkerSettings)
    app = faust.App(
        f"faust-floor-{uuid.uuid4().hex[:8]}",
        broker=[f"kafka://{h}" for h in kafka.bootstrap_servers.split(",")],
        store="memory://",
        datadir=data_dir,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_commit_interval=1.0,
    )
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    codec = UsageCodec.schemaless()
    state: dict[str, Any] = {"seen": 0, "started": None}

    @app.agent(topic)
    async def decode(stream: Any) -> None:
        async for batch in stream.take_events(worker.batch_max_messages, within=worker.batch_within_s):
            if state["started"] is None:
                state["started"] = time.perf_counter()
            for event in batch:
                msg = event.message
                headers = [(k, v) for k, v in (msg.headers or [])]
                state["seen"] += len(
                    decode_record(
                        codec, msg.value, headers, timestamp_ms(msg.timestamp, 1000.0), worker.max_clock_skew_ms
                    ).events
                )
            if state["seen"] >= events:
                elapsed = time.perf_counter() - state["started"]
                with open(result, "w") as out:
                    json.dump({"events_per_s": events / elapsed, "events": state["seen"]}, out)
                os._exit(0)  # the figure is written; Faust's orderly shutdown adds nothing to it

    return app


def main() -> None:
    topic_name, events, result = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryDirectory() as tmp:
        app = build(topic_name, events, result, tmp)
        faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
