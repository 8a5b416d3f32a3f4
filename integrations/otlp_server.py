"""The OTLP/HTTP trace receiver behind ``costplane ingest otlp``: ``POST /v1/traces`` → usage events.

A small threaded HTTP server (standard library). Each export is decoded (:mod:`.otlp`), every GenAI model-call span
becomes one event handed to the publisher, other spans are counted as ignored, spans with bad data (negative
token counts, say) are rejected and reported in OTLP's ``partial_success``. A body that cannot be read is answered
400 with the reason, in the encoding of the request (``google.rpc.Status`` for protobuf, its JSON form otherwise);
the receiver keeps serving. ``GET /metrics`` exposes the counters for Prometheus.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from costplane.integrations.otlp import (
    MAX_BODY_BYTES,
    AttributeMap,
    BadRequest,
    ExportResult,
    decompress,
    map_export,
    spans_from_json,
    spans_from_protobuf,
)
from costplane.logging import get_logger

PROTOBUF = "application/x-protobuf"
log = get_logger("costplane.otlp")


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.spans = Counter("costplane_otlp_spans_total", "Spans received, by outcome", ["outcome"], registry=r)
        self.bad_requests = Counter("costplane_otlp_bad_requests_total", "Exports answered 400", registry=r)


def _answer_body(protobuf: bool, result: ExportResult | None, error: str | None) -> bytes:
    """OTLP's ExportTraceServiceResponse (or a google.rpc.Status for an error) in the request's encoding."""
    rejected = len(result.rejected) if result is not None else 0
    message = "; ".join(result.rejected[:5]) if result is not None else ""
    if protobuf:
        if error is not None:
            try:
                from google.rpc.status_pb2 import Status
            except ImportError:  # without costplane[otlp]: the reason still goes back, as JSON
                return json.dumps({"code": 3, "message": error}).encode()
            return bytes(Status(code=3, message=error).SerializeToString())
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
        return bytes(response.SerializeToString())
    if error is not None:
        return json.dumps({"code": 3, "message": error}).encode()
    doc: dict[str, Any] = {}
    if rejected:
        doc["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return json.dumps(doc).encode()


class OtlpReceiver:
    """Decode exports, map spans, hand events to ``publisher`` (anything with ``emit``)."""

    def __init__(
        self, publisher: Any, mapping: AttributeMap | None = None, metrics: ReceiverMetrics | None = None
    ) -> None:
        self.publisher = publisher
        self.mapping = mapping or AttributeMap()
        self.metrics = metrics or ReceiverMetrics()

    def handle(self, body: bytes, content_type: str, content_encoding: str) -> tuple[int, bytes]:
        """(HTTP status, response body) of one export."""
        protobuf = content_type.split(";")[0].strip().lower() == PROTOBUF
        try:
            raw = decompress(body, content_encoding)
            spans = spans_from_protobuf(raw) if protobuf else spans_from_json(raw)
        except BadRequest as exc:
            self.metrics.bad_requests.inc()
            return 400, _answer_body(protobuf, None, str(exc))
        result = map_export(spans, self.mapping)
        for event in result.events:
            if self.publisher.emit(event):
                self.metrics.spans.labels("event").inc()
            else:
                result.rejected.append(f"span {event.attributes.get('otel.span_id')}: refused by the publisher")
        self.metrics.spans.labels("ignored").inc(result.ignored)
        self.metrics.spans.labels("rejected").inc(len(result.rejected))
        return 200, _answer_body(protobuf, result, None)


def make_server(receiver: OtlpReceiver, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server (not yet serving): ``server.serve_forever()`` in a thread or the main loop."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            ctype = self.headers.get("Content-Type", "application/json")
            answer_type = PROTOBUF if ctype.split(";")[0].strip().lower() == PROTOBUF else "application/json"
            if self.path.split("?")[0].rstrip("/") != "/v1/traces":
                self._send(404, b'{"code": 5, "message": "only /v1/traces is served"}', "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(413, b'{"code": 8, "message": "body too large"}', "application/json")
                return
            body = self.rfile.read(length)
            try:
                status, answer = receiver.handle(body, ctype, self.headers.get("Content-Encoding", ""))
            except Exception as exc:  # noqa: BLE001 - one bad export must not take the receiver down
                log.warning("otlp_export_failed", error=repr(exc))
                status, answer = 500, json.dumps({"code": 13, "message": f"internal error: {exc!r}"[:500]}).encode()
                answer_type = "application/json"
            self._send(status, answer, answer_type)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") == "/metrics":
                self._send(200, generate_latest(receiver.metrics.registry), "text/plain; version=0.0.4")
            else:
                self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="costplane-otlp", daemon=True)
    thread.start()
    return thread
