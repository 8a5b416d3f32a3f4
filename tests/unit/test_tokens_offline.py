"""Token counting works offline from the shipped, hash-checked BPE files and agrees with tiktoken's known counts."""

from __future__ import annotations

import gzip
import socket
from importlib import resources
from typing import Any

import pytest
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from costplane.pricing import tokens
from costplane.pricing.tokens import (
    ENCODINGS,
    TokenizerDataError,
    count_messages,
    count_text,
    decode_rank_file,
    encoding_for_model,
    get_encoding,
)


def _shipped(name: str) -> bytes:
    return resources.files("costplane.pricing").joinpath("tokenizer_data", ENCODINGS[name].filename).read_bytes()


def test_network_is_really_blocked_in_this_test() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(RuntimeError):
        sock.connect(("127.0.0.1", 9))


@pytest.mark.parametrize(
    ("encoding", "text", "ids"),
    [
        # tiktoken's own test suite and the OpenAI cookbook publish these token ids.
        ("cl100k_base", "hello world", [15339, 1917]),
        ("o200k_base", "hello world", [24912, 2375]),
        ("cl100k_base", "antidisestablishmentarianism", [519, 85342, 34500, 479, 8997, 2191]),
        ("o200k_base", "antidisestablishmentarianism", [493, 129901, 376, 160388, 21203, 2367]),
        ("cl100k_base", "お誕生日おめでとう", [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]),
        ("cl100k_base", "2 + 2 = 4", [17, 489, 220, 17, 284, 220, 19]),
    ],
)
def test_encodings_match_published_token_ids_with_sockets_blocked(encoding: str, text: str, ids: list[int]) -> None:
    assert get_encoding(encoding).encode(text) == ids


def test_builds_from_scratch_with_sockets_blocked() -> None:
    get_encoding.cache_clear()  # force a fresh build inside this network-blocked test
    assert count_text("hello world", "gpt-4").tokens == 2


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encoding_equals_what_tiktoken_would_build_from_the_same_file(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our pat_str, special tokens and ranks equal tiktoken_ext's constructor fed the same bytes (no download)."""
    raw = gzip.decompress(_shipped(name))
    seen: list[str] = []

    def fake_read(blobpath: str, expected_hash: str | None = None) -> bytes:
        seen.append(expected_hash or "")
        return raw

    monkeypatch.setattr(tiktoken.load, "read_file_cached", fake_read)
    reference: dict[str, Any] = openai_public.ENCODING_CONSTRUCTORS[name]()
    ours = get_encoding(name)
    assert seen == [ENCODINGS[name].sha256]  # tiktoken expects exactly the digest we check
    assert ours._pat_str == reference["pat_str"]
    assert ours._special_tokens == reference["special_tokens"]
    assert ours._mergeable_ranks == reference["mergeable_ranks"]


def test_hash_check_rejects_a_corrupted_file() -> None:
    raw = bytearray(gzip.decompress(_shipped("cl100k_base")))
    raw[100] ^= 0x01
    with pytest.raises(TokenizerDataError, match="hash mismatch"):
        decode_rank_file(gzip.compress(bytes(raw)), ENCODINGS["cl100k_base"].sha256, "cl100k_base")


def test_a_corrupted_shipped_file_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = gzip.compress(b"aGVsbG8= 0\n")
    monkeypatch.setattr(tokens, "_read_shipped", lambda filename: bad)
    get_encoding.cache_clear()
    try:
        with pytest.raises(TokenizerDataError, match="hash mismatch"):
            get_encoding("o200k_base")
    finally:
        get_encoding.cache_clear()


def test_not_gzip_is_refused() -> None:
    with pytest.raises(TokenizerDataError, match="not valid gzip"):
        decode_rank_file(b"plain text", ENCODINGS["cl100k_base"].sha256)


@pytest.mark.parametrize(
    ("model", "encoding", "estimated"),
    [
        ("gpt-4o", "o200k_base", False),
        ("gpt-4o-mini-2024-07-18", "o200k_base", False),
        ("gpt-4.1", "o200k_base", False),
        ("gpt-5-mini", "o200k_base", False),
        ("o3-mini", "o200k_base", False),
        ("o1", "o200k_base", False),
        ("gpt-oss-120b", "o200k_base", False),
        ("openai/gpt-4o", "o200k_base", False),
        ("azure/gpt-4o", "o200k_base", False),
        ("gpt-4", "cl100k_base", False),
        ("gpt-4-turbo", "cl100k_base", False),
        ("gpt-3.5-turbo", "cl100k_base", False),
        ("text-embedding-3-small", "cl100k_base", False),
        ("text-embedding-ada-002", "cl100k_base", False),
        ("text-davinci-003", "cl100k_base", True),
        ("claude-sonnet-4-5", "cl100k_base", True),
        ("gemini/gemini-2.5-pro", "cl100k_base", True),
    ],
)
def test_model_to_encoding(model: str, encoding: str, estimated: bool) -> None:
    assert encoding_for_model(model) == (encoding, estimated)


def test_count_text() -> None:
    # cookbook: "tiktoken is great!" is [83, 1609, 5963, 374, 2294, 0] in cl100k_base
    assert count_text("tiktoken is great!", "gpt-3.5-turbo") == tokens.TokenCount(6, False, "cl100k_base")
    assert get_encoding("cl100k_base").encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert count_text("hello world", "gpt-4o") == tokens.TokenCount(2, False, "o200k_base")
    assert count_text("", "gpt-4o").tokens == 0
    assert count_text("hello", "claude-3-haiku").estimated is True
    # special-token text inside user content is ordinary text, never an error
    assert count_text("<|endoftext|>", "gpt-4o").tokens > 1


# The OpenAI cookbook ("How to count tokens with tiktoken") example: 129 tokens for gpt-3.5/gpt-4, 124 for gpt-4o.
COOKBOOK_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo-0613", 129), ("gpt-4-0613", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_count_messages_matches_the_openai_cookbook(model: str, expected: int) -> None:
    result = count_messages(COOKBOOK_MESSAGES, model)
    assert result.tokens == expected
    assert result.estimated is False


def test_count_messages_parts_and_tools_are_estimates() -> None:
    text_only = count_messages([{"role": "user", "content": "describe this"}], "gpt-4o")
    with_parts = count_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe this"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            }
        ],
        "gpt-4o",
    )
    assert with_parts.tokens == text_only.tokens
    assert text_only.estimated is False and with_parts.estimated is True
    tool = count_messages(
        [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}],
        "gpt-4o",
    )
    assert tool.estimated is True and tool.tokens > 3 + 3
    assert count_messages([], "gpt-4o").tokens == 3


def test_count_messages_rejects_non_objects() -> None:
    with pytest.raises(TypeError):
        count_messages(["hello"], "gpt-4o")  # type: ignore[list-item]
