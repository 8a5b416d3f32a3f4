"""Gemini, Bedrock Converse, Mistral and Cohere usage shapes, and what happens to a shape nobody knows.

Gemini and Bedrock objects are built by the real SDKs offline (google-genai parses the REST JSON; botocore's
Stubber returns a response validated against the Bedrock service model without a connection).
"""

from __future__ import annotations

from typing import Any

from costplane.pricing.tokens import count_messages, count_text
from costplane.publisher.adapters import parse_usage, usage_from_response
from costplane.publisher.testing import InMemoryPublisher


def _b(i: int, c: int, w: int, o: int, r: int) -> dict[str, int]:
    return {
        "input_tokens": i,
        "cached_input_tokens": c,
        "cache_write_tokens": w,
        "output_tokens": o,
        "reasoning_tokens": r,
    }


def test_gemini_response_built_by_google_genai_from_rest_json() -> None:
    from google.genai import types

    response = types.GenerateContentResponse.model_validate(
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}],
            "usageMetadata": {
                "promptTokenCount": 1000,
                "cachedContentTokenCount": 600,
                "candidatesTokenCount": 40,
                "thoughtsTokenCount": 300,
                "toolUsePromptTokenCount": 5,
                "totalTokenCount": 1345,
            },
        }
    )
    # prompt includes the cache: 1000 - 600 fresh, plus 5 tool-use prompt tokens billed as input.
    assert usage_from_response(response) == _b(405, 600, 0, 40, 300)
    assert sum(usage_from_response(response).values()) == 1345  # disjoint buckets add up to Gemini's total


def test_gemini_rest_dict_and_missing_optional_counts() -> None:
    body = {"usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3}}
    assert parse_usage(body) == _b(12, 0, 0, 3, 0)


def test_bedrock_converse_response_from_botocore_stubber() -> None:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn",
                "usage": {
                    "inputTokens": 50,
                    "outputTokens": 20,
                    "totalTokens": 1570,
                    "cacheReadInputTokens": 1200,
                    "cacheWriteInputTokens": 300,
                },
                "metrics": {"latencyMs": 10},
            },
        )
        response = client.converse(
            modelId="anthropic.claude-3-5-haiku-20241022-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    assert usage_from_response(response) == _b(50, 1200, 300, 20, 0)


def test_mistral_usage_is_openai_shaped() -> None:
    usage = {
        "prompt_tokens": 90,
        "completion_tokens": 10,
        "total_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 30},
    }
    assert parse_usage({"id": "x", "usage": usage}) == _b(60, 30, 0, 10, 0)


def test_cohere_v2_bills_billed_units_and_v1_meta() -> None:
    v2 = {
        "id": "c",
        "usage": {
            "billed_units": {"input_tokens": 7, "output_tokens": 9},
            "tokens": {"input_tokens": 70, "output_tokens": 9},
        },
    }
    assert parse_usage(v2) == _b(7, 0, 0, 9, 0)
    v1 = {"text": "x", "meta": {"billed_units": {"input_tokens": 11, "output_tokens": 4}}}
    assert parse_usage(v1) == _b(11, 0, 0, 4, 0)
    only_tokens = {"usage": {"tokens": {"input_tokens": 5, "output_tokens": 2}}}
    assert parse_usage(only_tokens) == _b(5, 0, 0, 2, 0)


def test_unknown_shapes_are_none_not_zeros() -> None:
    for shape in ({}, {"usage": {"foo": 1}}, "text", 42, None, {"usage": None}):
        assert parse_usage(shape) is None
    assert usage_from_response({"usage": {"foo": 1}}) == _b(0, 0, 0, 0, 0)  # the zero fallback is explicit


def test_unrecognised_usage_is_estimated_counted_and_still_emitted() -> None:
    pub = InMemoryPublisher(strict=True)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "How many tokens is this sentence?"}]
    with pub.request(tenant="acme", provider="vertex", model="gpt-4o") as req, req.attempt() as attempt:
        attempt.usage_from({"weird": {"n": 5}}, messages=messages, output_text="Seven or so.")
    [event] = pub.events
    assert pub.unrecognised == ["dict"]
    assert event.tokens_estimated is True
    assert event.input_tokens == count_messages(messages, "gpt-4o").tokens > 0
    assert event.output_tokens == count_text("Seven or so.", "gpt-4o").tokens > 0


def test_recognised_usage_is_not_flagged() -> None:
    pub = InMemoryPublisher(strict=True)
    with pub.request(tenant="acme", provider="google", model="gemini-2.5-flash") as req, req.attempt() as a:
        a.usage_from({"usage_metadata": {"prompt_token_count": 3, "candidates_token_count": 1}})
    [event] = pub.events
    assert event.tokens_estimated is None and event.input_tokens == 3 and event.output_tokens == 1
    assert pub.unrecognised == []
