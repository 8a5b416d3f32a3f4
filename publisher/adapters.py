"""Provider ``usage`` objects → the event's disjoint token buckets, without depending on any provider SDK.

Providers report nested counts: OpenAI's ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens`` and
``completion_tokens`` *includes* ``completion_tokens_details.reasoning_tokens``; Anthropic reports cache reads and
writes *beside* ``input_tokens``. The event schema's buckets are disjoint, so the adapters subtract where needed.
Objects may be dicts or SDK objects (attributes); missing pieces count as 0.
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


def usage_from_openai(usage: Any) -> dict[str, int]:
    """OpenAI chat-completions (prompt/completion_tokens) or responses API (input/output_tokens) usage."""
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        prompt, completion = _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens"))
        p_details, c_details = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
    else:
        prompt, completion = _int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens"))
        p_details, c_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    cached = min(_int(_get(p_details, "cached_tokens")), prompt)
    reasoning = min(_int(_get(c_details, "reasoning_tokens")), completion)
    return {"input_tokens": prompt - cached, "cached_input_tokens": cached, "cache_write_tokens": 0,
            "output_tokens": completion - reasoning, "reasoning_tokens": reasoning}


def usage_from_anthropic(usage: Any) -> dict[str, int]:
    """Anthropic Messages usage: input, cache read and cache creation are already disjoint."""
    return {"input_tokens": _int(_get(usage, "input_tokens")),
            "cached_input_tokens": _int(_get(usage, "cache_read_input_tokens")),
            "cache_write_tokens": _int(_get(usage, "cache_creation_input_tokens")),
            "output_tokens": _int(_get(usage, "output_tokens")), "reasoning_tokens": 0}


def usage_from_response(response_or_usage: Any) -> dict[str, int]:
    """Pick the adapter by shape: a response with ``.usage``, or a usage object itself."""
    usage = _get(response_or_usage, "usage") or response_or_usage
    if _get(usage, "cache_read_input_tokens") is not None or _get(usage, "cache_creation_input_tokens") is not None:
        return usage_from_anthropic(usage)
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        return usage_from_openai(usage)
    details = _get(usage, "input_tokens_details") or _get(usage, "output_tokens_details")
    if details is not None:
        return usage_from_openai(usage)
    return usage_from_anthropic(usage)  # plain input_tokens/output_tokens: same meaning in both
