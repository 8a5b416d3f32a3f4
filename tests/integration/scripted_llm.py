"""A local HTTP server that answers model calls from a script: status codes, JSON bodies, SSE streams.

Real sockets and real HTTP, so the real SDKs (and their retry loops) run unchanged against it. Each request takes
the next reply of the script whatever its path; the request bodies are kept for assertions.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer. ``events`` makes it an SSE stream; ``stall_after`` sends that many events and then
    holds the connection open until the client goes away (or the server stops)."""

    status: int = 200
    body: dict[str, Any] | None = None
    events: list[tuple[str | None, Any]] | None = None
    stall_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (the server stops waiting when it is shut down)
    gzip: bool = False  # send the whole body gzip-compressed (Content-Encoding: gzip), in one write


class ScriptedLLM:
    """``with ScriptedLLM([...]) as server: OpenAI(base_url=server.url + "/v1", ...)``."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body of an SSE reply ends when the connection closes

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with outer._lock:
                    outer.requests.append(
                        {"path": self.path, "body": json.loads(raw or b"{}"), "headers": dict(self.headers)}
                    )
                    reply = outer.replies.pop(0) if outer.replies else Reply(500, {"error": {"message": "no script"}})
                outer._answer(self, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay_s and self.stop.wait(reply.delay_s):
            return
        handler.send_response(reply.status)
        headers = {"retry-after-ms": "5", **reply.headers}
        if reply.events is None:
            payload = json.dumps(reply.body or {}).encode()
            headers.update({"content-type": "application/json"})
        else:
            payload = b""
            headers["content-type"] = "text/event-stream"
        if reply.gzip:
            payload = gzip.compress(payload or self._sse_bytes(reply))
            headers["content-encoding"] = "gzip"
        if reply.events is None or reply.gzip:
            headers["content-length"] = str(len(payload))
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        try:
            if reply.events is None or reply.gzip:
                handler.wfile.write(payload)
                return
            for i, (name, data) in enumerate(reply.events):
                if reply.stall_after is not None and i >= reply.stall_after:
                    break
                head = f"event: {name}\n" if name else ""
                text = data if isinstance(data, str) else json.dumps(data)
                handler.wfile.write(f"{head}data: {text}\n\n".encode())
                handler.wfile.flush()
            if reply.stall_after is not None:
                self.stop.wait(30)
        except (BrokenPipeError, ConnectionResetError):
            return

    @staticmethod
    def _sse_bytes(reply: Reply) -> bytes:
        out = b""
        for name, data in reply.events or []:
            head = f"event: {name}\n" if name else ""
            text = data if isinstance(data, str) else json.dumps(data)
            out += f"{head}data: {text}\n\n".encode()
        return out

    def __enter__(self) -> ScriptedLLM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def scripted(replies: list[Reply]) -> Iterator[ScriptedLLM]:
    with ScriptedLLM(replies) as server:
        yield server


def openai_chat(prompt: int, completion: int, cached: int = 0, reasoning: int = 0, text: str = "hello") -> Reply:
    return Reply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        },
    )


def openai_chat_stream(words: list[str], usage: dict[str, Any] | None, stall_after: int | None = None) -> Reply:
    """Chunks of one word each, then (when ``usage``) the usage-only chunk, then ``[DONE]``."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], "usage": None})
        for w in words
    ]
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}))
    if usage is not None:
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return Reply(200, events=events, stall_after=stall_after)


def anthropic_message(inp: int, out: int, cache_read: int = 0, cache_write: int = 0) -> Reply:
    return Reply(
        200,
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": inp,
                "output_tokens": out,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": cache_write,
            },
        },
    )


def anthropic_stream(
    words: list[str], inp: int, out: int, cache_read: int = 0, stall_after: int | None = None
) -> Reply:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": inp,
                "output_tokens": 1,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": 0,
            },
        },
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", start),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
        for w in words
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Reply(200, events=events, stall_after=stall_after)


ERROR_500 = Reply(500, {"error": {"type": "server_error", "message": "boom"}})
ERROR_429 = Reply(429, {"error": {"type": "rate_limit_error", "message": "slow down"}})
