"""Provider ``usage`` objects → the event's disjoint token buckets, without depending on any provider SDK.

Providers report nested counts: OpenAI's ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens`` and
``completion_tokens`` *includes* ``completion_tokens_details.reasoning_tokens``; Anthropic reports cache reads and
writes *beside* ``input_tokens``; Gemini's ``prompt_token_count`` includes ``cached_content_token_count`` while
``thoughts_token_count`` is reported beside ``candidates_token_count``; Bedrock Converse reports cache reads and
writes beside ``inputTokens``; Cohere bills ``billed_units``. The event schema's buckets are disjoint, so the
adapters subtract where needed. Objects may be dicts or SDK objects (attributes); missing pieces count as 0.

:func:`parse_usage` says when it does not recognise a shape (``None``): a caller must then count tokens another
way and flag the event as estimated, rather than record a call as free.
"""

from __future__ import annotations

from typing import Any

BUCKETS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _buckets(i: int = 0, c: int = 0, w: int = 0, o: int = 0, r: int = 0) -> dict[str, int]:
    return {
        "input_tokens": i,
        "cached_input_tokens": c,
        "cache_write_tokens": w,
        "output_tokens": o,
        "reasoning_tokens": r,
    }


def _has(obj: Any, *names: str) -> bool:
    return any(_get(obj, n) is not None for n in names)


def usage_from_openai(usage: Any) -> dict[str, int]:
    """OpenAI chat-completions (prompt/completion_tokens) or responses API (input/output_tokens) usage.

    Mistral's usage has the same shape and meaning (``prompt_tokens`` includes any cached tokens).
    """
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        prompt, completion = _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens"))
        p_details, c_details = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
    else:
        prompt, completion = _int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens"))
        p_details, c_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    cached = min(_int(_get(p_details, "cached_tokens")), prompt)
    reasoning = min(_int(_get(c_details, "reasoning_tokens")), completion)
    return _buckets(prompt - cached, cached, 0, completion - reasoning, reasoning)


def usage_from_anthropic(usage: Any) -> dict[str, int]:
    """Anthropic Messages usage: input, cache read and cache creation are already disjoint."""
    return _buckets(
        _int(_get(usage, "input_tokens")),
        _int(_get(usage, "cache_read_input_tokens")),
        _int(_get(usage, "cache_creation_input_tokens")),
        _int(_get(usage, "output_tokens")),
    )


_GEMINI_SNAKE = (
    "prompt_token_count",
    "candidates_token_count",
    "cached_content_token_count",
    "thoughts_token_count",
    "tool_use_prompt_token_count",
)
_GEMINI_CAMEL = (
    "promptTokenCount",
    "candidatesTokenCount",
    "cachedContentTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
)


def usage_from_gemini(usage: Any) -> dict[str, int]:
    """Gemini ``usage_metadata`` (google-genai objects, snake_case) or REST ``usageMetadata`` (camelCase).

    ``prompt_token_count`` includes the cached content; thoughts are billed as output but reported beside the
    candidates, so they become the reasoning bucket; tool-use prompt tokens are billed as input.
    """
    names = _GEMINI_SNAKE if _has(usage, *_GEMINI_SNAKE) else _GEMINI_CAMEL
    prompt, candidates, cached, thoughts, tool_prompt = (_int(_get(usage, n)) for n in names)
    cached = min(cached, prompt)
    return _buckets(prompt - cached + tool_prompt, cached, 0, candidates, thoughts)


def usage_from_bedrock(usage: Any) -> dict[str, int]:
    """Bedrock Converse ``usage``: ``inputTokens`` excludes the cache reads and writes reported beside it."""
    return _buckets(
        _int(_get(usage, "inputTokens")),
        _int(_get(usage, "cacheReadInputTokens")),
        _int(_get(usage, "cacheWriteInputTokens")),
        _int(_get(usage, "outputTokens")),
    )


def usage_from_cohere(usage: Any) -> dict[str, int]:
    """Cohere ``usage`` (v2) or ``meta`` (v1): ``billed_units`` is what is charged, ``tokens`` the raw count."""
    units = _get(usage, "billed_units")
    if units is None or not _has(units, "input_tokens", "output_tokens"):
        units = _get(usage, "tokens")
    return _buckets(_int(_get(units, "input_tokens")), 0, 0, _int(_get(units, "output_tokens")))


def _recognise(usage: Any) -> dict[str, int] | None:
    """Buckets of a usage object of a known shape, or None."""
    if usage is None or isinstance(usage, str | bytes | int | float | bool | list | tuple):
        return None
    if _has(usage, "cache_read_input_tokens", "cache_creation_input_tokens"):
        return usage_from_anthropic(usage)
    if _has(usage, "prompt_tokens", "completion_tokens"):
        return usage_from_openai(usage)
    if _has(usage, "input_tokens_details", "output_tokens_details"):
        return usage_from_openai(usage)
    if _has(usage, "input_tokens", "output_tokens"):
        return usage_from_anthropic(usage)  # plain input_tokens/output_tokens: same meaning in both
    if _has(usage, *_GEMINI_SNAKE, *_GEMINI_CAMEL):
        return usage_from_gemini(usage)
    if _has(usage, "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"):
        return usage_from_bedrock(usage)
    if _has(usage, "billed_units", "tokens"):
        return usage_from_cohere(usage)
    return None


def parse_usage(response_or_usage: Any) -> dict[str, int] | None:
    """Buckets from a response or a usage object of any known provider; ``None`` when the shape is unknown.

    Looked for, in order: the object itself, then its ``usage`` (OpenAI, Anthropic, Mistral, Cohere v2, Bedrock
    Converse), ``usage_metadata`` / ``usageMetadata`` (Gemini) and ``meta`` (Cohere v1).
    """
    for name in ("usage", "usage_metadata", "usageMetadata", "meta"):
        inner = _get(response_or_usage, name)
        if inner is not None:
            found = _recognise(inner)
            if found is not None:
                return found
    return _recognise(response_or_usage)


def usage_from_response(response_or_usage: Any) -> dict[str, int]:
    """:func:`parse_usage`, with an unknown shape as all zeros (for callers that cannot estimate)."""
    found = parse_usage(response_or_usage)
    return found if found is not None else _buckets()
