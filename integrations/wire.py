"""What the instrumentation reads off the wire: the request body, and the usage in a JSON or SSE response body.

Pure functions and small accumulators (no I/O, no SDK imports), so the mapping is unit-tested offline. One
:class:`BodyReader` serves OpenAI chat completions, the Responses API, embeddings and Anthropic messages, streamed
or not: the shapes do not collide.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from costplane.publisher.adapters import parse_usage

#: Path endings of the calls that are billed per token, and the event ``operation`` each one is.
_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat"),
    ("/responses", "chat"),
    ("/messages", "chat"),
    ("/completions", "completion"),
    ("/embeddings", "embedding"),
)
_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def operation_for(method: str, path: str) -> str | None:
    """The operation of a billed model call, or None for anything else (listing models, files, counting tokens)."""
    if method.upper() != "POST":
        return None
    path = path.rstrip("/")
    for ending, operation in _OPERATIONS:
        if path.endswith(ending):
            return operation
    return None


@dataclass(slots=True)
class RequestInfo:
    """The parts of a model-call request the usage event needs."""

    operation: str
    model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    body: dict[str, Any] = field(default_factory=dict)


def _deployment(path: str) -> str | None:
    """Azure's deployment name from ``/openai/deployments/<name>/...`` (its requests may carry no model)."""
    parts = path.split("/")
    if "deployments" in parts:
        i = parts.index("deployments")
        if i + 1 < len(parts) and parts[i + 1]:
            return parts[i + 1]
    return None


def parse_request(method: str, path: str, content: bytes, body: Any = None) -> RequestInfo | None:
    """RequestInfo of a billed call (None for other requests); a body that is not a JSON object gives defaults.

    ``body`` is the request's JSON as the SDK built it, when known: then the bytes are not parsed again.
    """
    operation = operation_for(method, path)
    if operation is None:
        return None
    if not isinstance(body, dict) and content[:1] == b"{":
        try:
            body = json.loads(content)
        except ValueError:
            body = None
    if not isinstance(body, dict):
        return RequestInfo(operation, model=_deployment(path))
    model = body.get("model")
    max_tokens = next((v for k in _MAX_TOKEN_KEYS if type(v := body.get(k)) is int and v >= 0), None)
    return RequestInfo(
        operation,
        model=model if isinstance(model, str) and model else _deployment(path),
        max_tokens=max_tokens,
        stream=body.get("stream") is True,
        body=body,
    )


def prompt_of(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str]:
    """The prompt of a request body for offline counting: chat messages (with a ``system`` prompt folded in as
    the first message), or plain text (Responses ``input``, completions ``prompt``, embeddings ``input``)."""
    messages = body.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        system = body.get("system")
        if isinstance(system, str | list) and system:
            return [{"role": "system", "content": system}, *messages], ""
        return list(messages), ""
    for key in ("input", "prompt"):
        value = body.get(key)
        if isinstance(value, str):
            return None, value
        if isinstance(value, list):
            if all(isinstance(m, dict) and "role" in m for m in value):
                return list(value), ""
            return None, "\n".join(v for v in value if isinstance(v, str))
    return None, ""


def texts_in(value: Any, out: list[str], depth: int = 0) -> None:
    """Every string under a ``text``, ``content``, ``arguments`` or ``thinking`` key (generated output)."""
    if depth > 12:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key in ("text", "content", "arguments", "thinking", "partial_json", "delta", "refusal"):
                    out.append(item)
            else:
                texts_in(item, out, depth + 1)
    elif isinstance(value, list):
        for item in value:
            texts_in(item, out, depth + 1)


class _Decoder:
    """Undo ``Content-Encoding`` (gzip, deflate; br and zstd when their modules are installed)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        self.ok = True
        self._z: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._z = zlib.decompressobj()
        elif self.encoding == "br":
            self._z = _optional_decompressor("brotli", "Decompressor")
        elif self.encoding == "zstd":
            zstd = _optional_decompressor("zstandard", "ZstdDecompressor")
            self._z = zstd.decompressobj() if zstd is not None else None
        if self.encoding not in ("", "identity") and self._z is None:
            self.ok = False

    def decode(self, chunk: bytes) -> bytes:
        if self._z is None or not self.ok:
            return chunk if self.ok else b""
        try:
            method = getattr(self._z, "decompress", None) or self._z.process
            return bytes(method(chunk))
        except (zlib.error, ValueError, OSError):
            self.ok = False  # an undecodable body: its usage is unknown, the event says so
            return b""


def _optional_decompressor(module: str, name: str) -> Any:
    try:
        imported = __import__(module)
    except ImportError:
        return None
    return getattr(imported, name)()


@dataclass(slots=True)
class Outcome:
    """What a response body said: the final usage (buckets) if it arrived, the usage known so far, the generated
    text seen (for offline counting), whether the body ended as the protocol says it ends, and a stream error."""

    usage: dict[str, int] | None
    partial: dict[str, int] | None
    text: list[str]
    complete: bool
    stream_error: bool
    recognised: bool


def _data(event: bytes) -> bytes:
    """The data of one SSE event: its ``data:`` lines joined."""
    return b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))


_MARKERS = (b'"message_', b'"response.', b'"error"', b"[DONE]")
_USAGE = re.compile(rb'"usage":\s*[^n\s]')


def _hits(buffer: bytes, limit: int) -> list[int]:
    """Sorted positions (below ``limit``) of what makes an SSE event worth parsing at once: a usage value other
    than null, an Anthropic message event, a Responses API event, an error, or ``[DONE]``. Searched over the
    whole chunk in C; a string inside the JSON can only cause an early (harmless) parse, never a miss."""
    hits: list[int] = []
    for marker in _MARKERS:
        i = buffer.find(marker, 0, limit)
        while i >= 0:
            hits.append(i)
            i = buffer.find(marker, i + 1, limit)
    if buffer.count(b'"usage"', 0, limit) != buffer.count(b'"usage":null', 0, limit):
        hits.extend(m.start() for m in _USAGE.finditer(buffer, 0, limit))
    hits.sort()
    return hits


class BodyReader:
    """Fed the raw body bytes as they pass; :meth:`outcome` says what they meant.

    A JSON body is kept whole and its usage read at the end. An SSE body is parsed event by event and not kept:
    usage from the final usage chunk (OpenAI chat with ``stream_options.include_usage``), ``response.completed``
    (Responses API) or ``message_start`` + ``message_delta`` (Anthropic); text deltas are kept for counting.
    With ``drop_usage_chunk`` the usage-only chat chunk the instrumentation asked for is taken out of what the
    app receives (:meth:`feed` returns the bytes to pass on, decoded).
    """

    def __init__(self, *, sse: bool, content_encoding: str = "", drop_usage_chunk: bool = False) -> None:
        self.sse = sse
        self._decoder = _Decoder(content_encoding)
        self._body = bytearray()
        self._pending = b""
        self._raw_usage: dict[str, Any] | None = None
        self._final = False
        self._text: list[str] = []
        self._deltas: list[bytes] = []
        self._done = False
        self._error = False
        self._drop = drop_usage_chunk

    def feed(self, chunk: bytes) -> bytes:
        """Take raw bytes; returns the decoded bytes to forward when dropping the usage chunk, else ``b""``."""
        data = self._decoder.decode(chunk)
        if not self.sse:
            self._body += data
            return b""
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._pending + data if self._pending else data
        events = buffer.split(b"\n\n")
        self._pending = events.pop()  # an unterminated last event waits for the next chunk
        hits = _hits(buffer, len(buffer) - len(self._pending))
        drop = self._drop
        if not hits:  # the common chunk: text deltas only, read later if an estimate needs them
            self._deltas.extend(events)
            return (b"\n\n".join(events) + b"\n\n") if drop and events else b""
        out = bytearray()
        keep = self._deltas.append
        offset, h, count = 0, 0, len(hits)
        for event in events:
            end = offset + len(event)
            interesting = False
            while h < count and hits[h] < end:
                interesting = True
                h += 1
            offset = end + 2
            if not interesting:
                keep(event)
                if drop:
                    out += event + b"\n\n"
            elif self._event(event) and drop:
                out += event + b"\n\n"
        return bytes(out)

    def rest(self) -> bytes:
        """Bytes held back at the end (an unterminated last event), to forward when dropping the usage chunk."""
        rest, self._pending = self._pending, b""
        if rest:
            self._event(rest)
        return rest

    def _event(self, event: bytes) -> bool:
        """Interpret one SSE event (without its blank-line separator) that may carry usage, an end or an error;
        False when it is the usage chunk to drop."""
        data = _data(event)
        if data.strip() == b"[DONE]":
            self._done = True
            return True
        if not data:
            return True
        try:
            obj = json.loads(data)
        except ValueError:
            return True
        if not isinstance(obj, dict):
            return True
        return self._interpret(obj)

    def _interpret(self, obj: dict[str, Any]) -> bool:
        kind = obj.get("type")
        if isinstance(kind, str):
            self._typed_event(kind, obj)
            return True
        # OpenAI chat completion chunk.
        usage = obj.get("usage")
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    texts_in(delta, self._text)
        if isinstance(usage, dict):
            self._raw_usage, self._final = usage, True
            if self._drop and not choices:
                return False
        if isinstance(obj.get("error"), dict):
            self._error = True
        return True

    def _typed_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "message_start":  # Anthropic: input and cache counts up front
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._raw_usage = dict(usage)
        elif kind == "message_delta":  # Anthropic: cumulative output (and, on newer APIs, the input again)
            usage = obj.get("usage")
            if isinstance(usage, dict):
                merged = dict(self._raw_usage or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                self._raw_usage, self._final = merged, True
        elif kind == "content_block_delta":
            texts_in(obj.get("delta"), self._text)
        elif kind == "message_stop":
            self._done = True
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = obj.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self._raw_usage, self._final = usage, True
            self._done = True
            self._error = self._error or kind == "response.failed"
        elif kind.startswith("response.") and kind.endswith(".delta"):
            delta = obj.get("delta")
            if isinstance(delta, str):
                self._text.append(delta)
        elif kind in ("error", "response.error"):
            self._error = True

    def outcome(self, *, body_ended: bool) -> Outcome:
        """The result once the body stopped (``body_ended``: it ran to its end rather than being cut off)."""
        if not self._decoder.ok:
            return Outcome(None, None, [], body_ended, False, False)
        if self.sse:
            if self._pending and body_ended:  # a last event without its blank line
                self._event(self._pending)
                self._pending = b""
            parsed = parse_usage(self._raw_usage) if self._raw_usage is not None else None
            if self._deltas and not self._final:  # only an estimate needs the text
                for event in self._deltas:
                    try:
                        obj = json.loads(_data(event))
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        self._interpret(obj)
                self._deltas.clear()
            final = parsed if self._final else None
            # The protocol's last event ends the attempt even when the SDK closes before reading to EOF.
            complete = self._done or (body_ended and self._final)
            return Outcome(final, parsed, self._text, complete, self._error, final is not None)
        usage, text = _json_usage(bytes(self._body)) if body_ended else (None, [])
        return Outcome(usage, None, text, body_ended, False, usage is not None)


def _json_usage(body: bytes) -> tuple[dict[str, int] | None, list[str]]:
    """Usage of a JSON response body (and its generated text, for when the usage is of an unknown shape).

    The top-level ``usage`` comes last in these bodies and a key inside a string is escaped, so the last
    ``"usage"`` key is tried first: a large embeddings body is then not parsed whole.
    """
    at = body.rfind(b'"usage"')
    if at >= 0:
        start = body.find(b"{", at)
        colon = body.find(b":", at)
        if 0 <= colon < start and body[colon + 1 : start].strip() == b"":
            try:
                usage, _ = json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))
            except ValueError:
                usage = None
            found = parse_usage(usage) if isinstance(usage, dict) else None
            if found is not None:
                return found, []
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        return None, []
    found = parse_usage(obj) if isinstance(obj, dict) else None
    text: list[str] = []
    if found is None and isinstance(obj, dict):
        for key in ("choices", "content", "output", "candidates"):
            texts_in(obj.get(key), text)
    return found, text
