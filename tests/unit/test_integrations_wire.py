"""Request and response bodies → what a usage event needs; attributes → event fields and guard scope. Offline."""

from __future__ import annotations

import gzip
import json
from typing import Any

from costplane.integrations.context import attributes, current_attributes
from costplane.integrations.fields import event_fields, guard_scope
from costplane.integrations.wire import BodyReader, operation_for, parse_request, prompt_of


def _sse(*objs: Any) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


def test_only_billed_model_calls_are_recorded() -> None:
    assert operation_for("POST", "/v1/chat/completions") == "chat"
    assert operation_for("POST", "/openai/deployments/x/chat/completions") == "chat"
    assert operation_for("POST", "/v1/responses") == "chat"
    assert operation_for("POST", "/v1/messages") == "chat"
    assert operation_for("POST", "/v1/completions") == "completion"
    assert operation_for("POST", "/v1/embeddings") == "embedding"
    assert operation_for("GET", "/v1/models") is None
    assert operation_for("POST", "/v1/messages/count_tokens") is None
    assert operation_for("POST", "/v1/files") is None


def test_request_model_max_tokens_and_stream() -> None:
    body = json.dumps({"model": "gpt-4o", "max_completion_tokens": 77, "stream": True}).encode()
    info = parse_request("POST", "/v1/chat/completions", body)
    assert info is not None and (info.model, info.max_tokens, info.stream) == ("gpt-4o", 77, True)
    azure = parse_request("POST", "/openai/deployments/prod/chat/completions", b"{}")
    assert azure is not None and azure.model == "prod" and azure.max_tokens is None
    garbage = parse_request("POST", "/v1/messages", b"not json")
    assert garbage is not None and garbage.model is None and garbage.body == {}


def test_prompt_of_each_request_shape() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert prompt_of({"messages": msgs}) == (msgs, "")
    assert prompt_of({"messages": msgs, "system": "be brief"}) == (
        [{"role": "system", "content": "be brief"}, *msgs],
        "",
    )
    assert prompt_of({"input": "hello"}) == (None, "hello")
    assert prompt_of({"input": ["a", "b"]}) == (None, "a\nb")
    assert prompt_of({"input": msgs}) == (msgs, "")
    assert prompt_of({}) == (None, "")


def test_json_body_usage_gzip_and_split_across_chunks() -> None:
    body = json.dumps(
        {
            "id": "x",
            "choices": [{"message": {"content": 'say "usage": 5'}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4},
        }
    ).encode()
    packed = gzip.compress(body)
    reader = BodyReader(sse=False, content_encoding="gzip")
    for i in range(0, len(packed), 7):
        reader.feed(packed[i : i + 7])
    outcome = reader.outcome(body_ended=True)
    assert outcome.usage == {
        "input_tokens": 10,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 4,
        "reasoning_tokens": 0,
    }
    assert outcome.complete and outcome.recognised


def test_a_json_body_cut_short_or_unknown() -> None:
    reader = BodyReader(sse=False)
    reader.feed(b'{"usage": {"prompt_tokens": 1')
    assert reader.outcome(body_ended=False).usage is None
    unknown = BodyReader(sse=False)
    unknown.feed(json.dumps({"choices": [{"message": {"content": "hi there"}}]}).encode())
    outcome = unknown.outcome(body_ended=True)
    assert outcome.usage is None and not outcome.recognised and outcome.text == ["hi there"]


def test_undecodable_body_is_unknown_not_a_crash() -> None:
    reader = BodyReader(sse=False, content_encoding="gzip")
    reader.feed(b"definitely not gzip")
    outcome = reader.outcome(body_ended=True)
    assert outcome.usage is None and not outcome.recognised


def test_openai_chat_stream_usage_chunk_and_drop() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Hi"}}], "usage": None}
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    raw = _sse(chunk, usage, b"[DONE]")
    reader = BodyReader(sse=True, drop_usage_chunk=True)
    forwarded = b"".join(reader.feed(raw[i : i + 5]) for i in range(0, len(raw), 5)) + reader.rest()
    assert forwarded == _sse(chunk, b"[DONE]")
    outcome = reader.outcome(body_ended=False)  # closed after [DONE] without reading to EOF: still complete
    assert outcome.complete and outcome.usage is not None and outcome.usage["input_tokens"] == 5
    assert outcome.text == []  # the deltas are read only when an estimate needs them


def test_responses_stream_and_anthropic_stream() -> None:
    responses = _sse(
        {"type": "response.output_text.delta", "delta": "Hel"},
        {
            "type": "response.completed",
            "response": {
                "usage": {"input_tokens": 8, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}}
            },
        },
    )
    reader = BodyReader(sse=True)
    reader.feed(responses)
    outcome = reader.outcome(body_ended=True)
    assert outcome.usage == {
        "input_tokens": 8,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 2,
        "reasoning_tokens": 1,
    }
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 1}},
    }
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Yo"}}
    end = {"type": "message_delta", "usage": {"output_tokens": 6}}
    cut = BodyReader(sse=True)
    cut.feed(_sse(start, delta))
    partial = cut.outcome(body_ended=False)
    assert not partial.complete and partial.usage is None and partial.partial is not None
    assert partial.partial["input_tokens"] == 12 and partial.text == ["Yo"]
    whole = BodyReader(sse=True)
    whole.feed(_sse(start, delta, end, {"type": "message_stop"}))
    assert whole.outcome(body_ended=True).usage == {
        "input_tokens": 12,
        "cached_input_tokens": 4,
        "cache_write_tokens": 0,
        "output_tokens": 6,
        "reasoning_tokens": 0,
    }


def test_stream_error_event_marks_the_attempt_failed() -> None:
    reader = BodyReader(sse=True)
    reader.feed(b"event: error\n" + _sse({"type": "error", "error": {"type": "overloaded_error"}}))
    assert reader.outcome(body_ended=True).stream_error


def test_attributes_nest_and_map_to_fields_and_scope() -> None:
    with attributes(feature="search", user="u1", turn="3"):
        with attributes(session_id="s9", feature="chat", color="blue", env=None):
            fields = event_fields({"tenant": "acme", "env": "prod"}, current_attributes())
        assert current_attributes()["feature"] == "search"
    assert current_attributes() == {}
    assert fields == {
        "tenant": "acme",
        "env": "prod",
        "feature": "chat",
        "user_id": "u1",
        "turn": 3,
        "session_id": "s9",
        "attributes": {"color": "blue"},
    }
    assert guard_scope(fields) == {"tenant": "acme", "env": "prod", "feature": "chat", "user": "u1"}
    assert event_fields({}, {"turn": "third"}) == {"attributes": {"turn": "third"}}


def test_malformed_stream_events_are_skipped_and_the_attempt_is_estimated() -> None:
    reader = BodyReader(sse=True)
    reader.feed(b"data: {broken json\n\n" + _sse({"choices": [{"delta": {"content": "ok"}}]}) + b": comment\n\n")
    outcome = reader.outcome(body_ended=True)
    assert outcome.usage is None and not outcome.complete and outcome.text == ["ok"]
