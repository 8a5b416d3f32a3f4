"""SDK instrumentation overhead: the same OpenAI and Anthropic calls, bare and instrumented, against a local server.

The server runs in its own process (HTTP/1.1 keep-alive, canned bodies), so the client's timings include only the
client side. Bare and instrumented clients alternate in rounds, so drift and noise fall on both alike; each figure
is the median time per call. The instrumented clients publish through a real ``UsagePublisher`` to the dev stack's
Kafka (a topic prefix of their own, deleted afterwards), so ``emit`` is part of what is measured.

Run with the dev stack up: ``python -m bench.bench_integrations [--calls N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import clean_up_on_sigterm, drop_topics, write_section
from costplane.config import KafkaSettings, PublisherSettings, WorkerSettings, load_settings

CHAT = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 40}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 80,
            "total_tokens": 200,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
).encode()
MESSAGE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": "hello " * 40}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 120,
            "output_tokens": 80,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
).encode()
_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
STREAM = b"".join(
    [
        b"data: " + json.dumps({**_CHUNK, "choices": [{"index": 0, "delta": {"content": "word "}}]}).encode() + b"\n\n"
        for _ in range(40)
    ]
    + [
        b"data: "
        + json.dumps({**_CHUNK, "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 40}}).encode()
        + b"\n\n",
        b"data: [DONE]\n\n",
    ]
)


def _serve(port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave at once, without waiting for a delayed ACK

        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if self.path.endswith("/messages"):
                payload, ctype = MESSAGE, "application/json"
            elif body.get("stream"):
                payload, ctype = STREAM, "text/event-stream"
            else:
                payload, ctype = CHAT, "application/json"
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rounds(
    bare: Callable[[], Any], instrumented: Callable[[], Any], calls: int, per_round: int = 10
) -> tuple[float, float, float]:
    """(median bare call, median instrumented call, median of the per-round differences), in seconds.

    Rounds of ``per_round`` calls alternate between the two clients (after a warm-up of each); the added time is
    the median over rounds of (instrumented round median − the adjacent bare round median), so load that comes and
    goes on the machine falls on both sides of each difference.
    """
    for _ in range(per_round):
        bare()
        instrumented()
    all_bare: list[float] = []
    all_inst: list[float] = []
    diffs: list[float] = []
    for _ in range(max(1, calls // per_round)):
        medians = []
        for fn, sink in ((bare, all_bare), (instrumented, all_inst)):
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            sink.extend(times)
            medians.append(statistics.median(times))
        diffs.append(medians[1] - medians[0])
    return statistics.median(all_bare), statistics.median(all_inst), statistics.median(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="Timed calls per client and case.")
    args = parser.parse_args()
    clean_up_on_sigterm()

    import anthropic
    import openai

    from costplane.integrations.anthropic import instrument as instrument_anthropic
    from costplane.integrations.openai import instrument as instrument_openai
    from costplane.publisher import UsagePublisher
    from costplane.streams.topics import create_topics

    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    kafka = load_settings(KafkaSettings, topic_prefix=f"bench-int-{uuid.uuid4().hex[:8]}")
    create_topics(kafka, load_settings(WorkerSettings, usage_partitions=1))
    spool = Path(tempfile.mkdtemp(prefix="cp-bench-spool-"))
    publisher = UsagePublisher(kafka, load_settings(PublisherSettings, spool_dir=spool))
    try:
        for _ in range(100):  # wait for the server process
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        msgs = [{"role": "user", "content": "Summarise the quarterly report in three bullet points."}]
        bare_oa = openai.OpenAI(base_url=url + "/v1", api_key="k")
        inst_oa = instrument_openai(
            openai.OpenAI(base_url=url + "/v1", api_key="k"), publisher=publisher, tenant="bench", feature="overhead"
        )
        bare_an = anthropic.Anthropic(base_url=url, api_key="k")
        inst_an = instrument_anthropic(
            anthropic.Anthropic(base_url=url, api_key="k"), publisher=publisher, tenant="bench", feature="overhead"
        )

        def chat(client: Any) -> Callable[[], Any]:
            return lambda: client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=200)

        def stream(client: Any) -> Callable[[], Any]:
            return lambda: sum(
                1
                for _ in client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=msgs,
                    max_tokens=200,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )

        def message(client: Any) -> Callable[[], Any]:
            return lambda: client.messages.create(model="claude-3-5-haiku-20241022", messages=msgs, max_tokens=200)

        rows = []
        for name, make, bare, inst in (
            ("OpenAI chat completion", chat, bare_oa, inst_oa),
            ("OpenAI chat, streamed (40 chunks)", stream, bare_oa, inst_oa),
            ("Anthropic message", message, bare_an, inst_an),
        ):
            floor, measured, extra = _rounds(make(bare), make(inst), args.calls)
            target = max(0.05 * floor, 200e-6)
            rows.append((name, floor, measured, extra, target))
        delivered = publisher.flush(30)
    finally:
        publisher.close()
        server.terminate()
        drop_topics(kafka)

    table = [
        "| call | bare SDK (floor, same run) | instrumented | added per call | target | |",
        "|---|---|---|---|---|---|",
    ]
    for name, floor, measured, extra, target in rows:
        table.append(
            f"| {name} | {floor * 1e6:,.0f} µs | {measured * 1e6:,.0f} µs | {extra * 1e6:+,.0f} µs "
            f"({extra / floor:+.1%}) | ≤ {target * 1e6:,.0f} µs | {'met' if extra <= target else 'MISSED'} |"
        )
    body = f"""
Command: `python -m bench.bench_integrations --calls {args.calls}` (dev stack running). Median time per call of the
real SDK client against a local HTTP server in another process (keep-alive, canned bodies), bare and instrumented
clients alternating in rounds of 10 calls ("added" is the median over rounds of the difference between adjacent
rounds' medians); the instrumented clients publish every attempt through a real
`UsagePublisher` to the dev stack's Kafka ({"all acknowledged" if delivered == 0 else f"{delivered} unacknowledged"}).
The target is 5 % of the bare call or 200 µs, whichever is larger. Load average when the run ended:
{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine widens the spread of both columns).

{chr(10).join(table)}

What the instrumentation adds per call: reading the model and limits from the request JSON the SDK built, one
context-variable set, watching the response bytes as the SDK reads them (for a JSON body, the last `"usage"`
object is parsed; for a stream, only the events that can carry usage, an end or an error — the text deltas are
kept unread unless the stream ends without its usage), and one `emit`.
"""
    write_section("SDK instrumentation", body)
    print(body)


if __name__ == "__main__":
    main()
