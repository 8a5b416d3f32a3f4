"""Provider usage objects become the event's disjoint buckets; no provider SDK needed."""

from __future__ import annotations

from types import SimpleNamespace

from costplane.publisher.adapters import usage_from_anthropic, usage_from_openai, usage_from_response


def test_openai_and_anthropic_usage_become_disjoint_buckets() -> None:
    openai_chat = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    assert usage_from_openai(openai_chat) == {
        "input_tokens": 400,
        "cached_input_tokens": 600,
        "cache_write_tokens": 0,
        "output_tokens": 100,
        "reasoning_tokens": 200,
    }

    class Details:
        cached_tokens = 50

    class ResponsesUsage:  # SDK-object shape of the responses API
        input_tokens, output_tokens = 200, 80
        input_tokens_details = Details()
        output_tokens_details = None

    class Response:
        usage = ResponsesUsage()

    assert usage_from_response(Response()) == {
        "input_tokens": 150,
        "cached_input_tokens": 50,
        "cache_write_tokens": 0,
        "output_tokens": 80,
        "reasoning_tokens": 0,
    }
    anthropic = {
        "input_tokens": 20,
        "cache_read_input_tokens": 3000,
        "cache_creation_input_tokens": 500,
        "output_tokens": 90,
    }
    assert (
        usage_from_anthropic(anthropic)
        == usage_from_response({"usage": anthropic})
        == {
            "input_tokens": 20,
            "cached_input_tokens": 3000,
            "cache_write_tokens": 500,
            "output_tokens": 90,
            "reasoning_tokens": 0,
        }
    )


def test_openai_sdk_objects_with_missing_details() -> None:
    usage = SimpleNamespace(
        prompt_tokens=120,
        completion_tokens=30,
        total_tokens=150,
        prompt_tokens_details=None,
        completion_tokens_details=None,
    )
    assert usage_from_response(SimpleNamespace(usage=usage)) == {
        "input_tokens": 120,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 30,
        "reasoning_tokens": 0,
    }


def test_openai_responses_api_reasoning_is_taken_out_of_output() -> None:
    usage = {
        "input_tokens": 500,
        "output_tokens": 900,
        "input_tokens_details": {"cached_tokens": 100},
        "output_tokens_details": {"reasoning_tokens": 700},
    }
    got = usage_from_response(usage)
    assert got == {
        "input_tokens": 400,
        "cached_input_tokens": 100,
        "cache_write_tokens": 0,
        "output_tokens": 200,
        "reasoning_tokens": 700,
    }
    assert sum(got.values()) == 500 + 900  # disjoint: nothing counted twice


def test_anthropic_sdk_object_with_null_cache_fields() -> None:
    usage = SimpleNamespace(
        input_tokens=42, output_tokens=7, cache_read_input_tokens=None, cache_creation_input_tokens=None
    )
    assert usage_from_response(SimpleNamespace(usage=usage)) == {
        "input_tokens": 42,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 7,
        "reasoning_tokens": 0,
    }


def test_nonsense_counts_become_zero_not_negative() -> None:
    weird = {
        "prompt_tokens": 10,
        "completion_tokens": "many",
        "prompt_tokens_details": {"cached_tokens": 50},
        "completion_tokens_details": {"reasoning_tokens": True},
    }
    got = usage_from_openai(weird)
    assert all(v >= 0 for v in got.values()) and got["cached_input_tokens"] == 10 and got["input_tokens"] == 0
