"""``costplane ingest otlp``'s receiver with the real OpenTelemetry SDK, its OTLP/HTTP exporter and the official
OpenAI instrumentation around a real OpenAI client talking to a local server; events go through the real publisher
to Kafka and are read back."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from confluent_kafka import Consumer
from scripted_llm import ERROR_429, openai_chat, scripted

from costplane.config import KafkaSettings, PublisherSettings, WorkerSettings, load_settings
from costplane.integrations.otlp import AttributeMap, span_event_id
from costplane.integrations.otlp_server import OtlpReceiver, make_server, serve_in_thread
from costplane.publisher import UsagePublisher
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import InMemoryPublisher
from costplane.streams.topics import create_topics

GPT = "gpt-4o-mini"


@pytest.fixture
def receiver_url() -> Iterator[tuple[str, InMemoryPublisher, OtlpReceiver]]:
    pub = InMemoryPublisher()
    receiver = OtlpReceiver(pub, AttributeMap())
    server = make_server(receiver, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pub, receiver
    finally:
        server.shutdown()
        server.server_close()


def _consume(kafka: KafkaSettings, expected: int, timeout_s: float = 30.0) -> list[UsageEvent]:
    consumer = Consumer(
        {**kafka.confluent_config(), "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka.topic("usage")])
    codec = UsageCodec.schemaless()
    events: list[UsageEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(events) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            events += codec.decode(msg.value(), msg.headers() or []).events
    finally:
        consumer.close()
    return events


@pytest.mark.http
@pytest.mark.kafka
def test_openai_v2_spans_exported_over_otlp_become_events_once(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))
    publisher = UsagePublisher(kafka_settings, load_settings(PublisherSettings, spool_dir=tmp_path / "spool"))
    receiver = OtlpReceiver(publisher)
    server = make_server(receiver, "127.0.0.1", 0)
    serve_in_thread(server)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    kept = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "search-api", "costplane.tenant": "acme", "deployment.environment.name": "prod"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with scripted([openai_chat(1200, 300), ERROR_429]) as llm:
            client = openai.OpenAI(base_url=llm.url + "/v1", api_key="t", max_retries=0)
            tracer = provider.get_tracer("app")
            with tracer.start_as_current_span("handle request"):  # a non-GenAI span: ignored, counted
                client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], max_tokens=400)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "again"}])
        provider.force_flush()
        spans = kept.get_finished_spans()
        # The same export once more (a retrying exporter): the event ids repeat, so the sink counts them once.
        OTLPSpanExporter(endpoint=endpoint).export(spans)
        assert publisher.flush(30) == 0
        events = _consume(kafka_settings, 4)
    finally:
        instrumentor.uninstrument()
        server.shutdown()
        server.server_close()
        publisher.close()
    genai = [s for s in spans if s.attributes and "gen_ai.operation.name" in s.attributes]
    ids = {span_event_id(s.context.trace_id.to_bytes(16, "big"), s.context.span_id.to_bytes(8, "big")) for s in genai}
    assert len(events) == 4 and {e.event_id for e in events} == ids and len(ids) == 2
    ok = next(e for e in events if e.status == "ok")
    assert (ok.tenant, ok.feature, ok.env, ok.provider, ok.model, ok.operation) == (
        "acme",
        "search-api",
        "prod",
        "openai",
        GPT,
        "chat",
    )
    assert (ok.input_tokens, ok.output_tokens, ok.max_tokens) == (1200, 300, 400)
    failed = next(e for e in events if e.status != "ok")
    assert failed.status == "rate_limited" and failed.input_tokens == 0
    assert receiver.metrics.spans.labels("ignored")._value.get() == 2  # "handle request", in each export


def _span(attrs: dict[str, Any], span_id: str = "00f067aa0ba902b7") -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}

    return {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": span_id,
        "name": "chat",
        "startTimeUnixNano": "1760000000000000000",
        "endTimeUnixNano": "1760000000250000000",
        "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
    }


def _export(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "t1"}}]},
                "scopeSpans": [{"spans": list(spans)}],
            }
        ]
    }


@pytest.mark.http
def test_json_gzip_cache_and_reasoning_buckets_and_bad_spans(
    receiver_url: tuple[str, InMemoryPublisher, OtlpReceiver],
) -> None:
    url, pub, _ = receiver_url
    good = _span(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.cache_read.input_tokens": 600,
            "gen_ai.usage.cache_creation.input_tokens": 100,
            "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.reasoning.output_tokens": 30,
            "user.id": "u9",
            "session.id": "s1",
        }
    )
    negative = _span(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": GPT,
            "gen_ai.usage.input_tokens": -4,
        },
        span_id="00f067aa0ba902b8",
    )
    tool = _span(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.provider.name": "openai"}, span_id="00f067aa0ba902b9"
    )
    body = gzip.compress(json.dumps(_export(good, negative, tool)).encode())
    answer = httpx.post(
        url + "/v1/traces", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "negative_tokens" in partial["errorMessage"]
    [event] = pub.events
    assert (event.tenant, event.user_id, event.session_id, event.provider) == ("t1", "u9", "s1", "anthropic")
    assert (
        event.input_tokens,
        event.cached_input_tokens,
        event.cache_write_tokens,
        event.output_tokens,
        event.reasoning_tokens,
    ) == (300, 600, 100, 50, 30)
    assert (event.occurred_at, event.latency_ms) == (1_760_000_000_250, 250)


@pytest.mark.http
def test_bad_bodies_get_400_with_the_reason_and_the_receiver_keeps_going(
    receiver_url: tuple[str, InMemoryPublisher, OtlpReceiver],
) -> None:
    url, pub, receiver = receiver_url
    not_json = httpx.post(url + "/v1/traces", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["message"]
    bad_gzip = httpx.post(
        url + "/v1/traces", content=b"plain", headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert bad_gzip.status_code == 400 and "gzip" in bad_gzip.json()["message"]
    bad_pb = httpx.post(url + "/v1/traces", content=b"\xff\xff\xff", headers={"content-type": "application/x-protobuf"})
    assert bad_pb.status_code == 400
    from google.rpc.status_pb2 import Status

    assert "protobuf" in Status.FromString(bad_pb.content).message
    bad_id = httpx.post(url + "/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]})
    assert bad_id.status_code == 400 and "traceId" in bad_id.json()["message"]
    assert receiver.metrics.bad_requests._value.get() == 4
    fine = httpx.post(url + "/v1/traces", json=_export())
    assert fine.status_code == 200 and fine.json() == {} and pub.events == []


@pytest.mark.http
def test_cli_port_in_use_is_one_line_and_exit_2() -> None:
    import socket

    from typer.testing import CliRunner

    from costplane.cli.main import build_app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(build_app(), ["ingest", "otlp", "--port", str(port)])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.output
    assert "Traceback" not in result.output
