"""Offline token estimation with tiktoken, for prompts an app has not sent yet.

tiktoken downloads its BPE files on first use, which fails on air-gapped machines and inside sandboxes, so the
``cl100k_base`` and ``o200k_base`` rank files ship with this package (gzipped, under ``tokenizer_data/``). They are
checked against the same SHA-256 digests tiktoken itself expects before a single rank is trusted, and the
``tiktoken.Encoding`` is built here with tiktoken's own split patterns and special tokens. Nothing in this module
touches the network, the environment or tiktoken's cache directory.

Counts are exact for OpenAI models whose encoding tiktoken knows. For every other model (Anthropic, Google, Meta,
...) the count is an approximation with ``cl100k_base`` and is flagged ``estimated=True``: cl100k splits text into
slightly more tokens than o200k, which makes it the safer side for a budget check of a foreign tokenizer.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.model

__all__ = [
    "ENCODINGS",
    "TokenCount",
    "TokenizerDataError",
    "count_messages",
    "count_text",
    "encoding_for_model",
    "get_encoding",
]

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    """Everything needed to build one encoding: tiktoken_ext.openai_public's constants and the shipped file."""

    name: str
    filename: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]


ENCODINGS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        name="cl100k_base",
        filename="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT,
        special_tokens={
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        name="o200k_base",
        filename="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT,
        special_tokens={ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
}

#: Encoding used to approximate models whose tokenizer tiktoken does not know.
FALLBACK_ENCODING = "cl100k_base"

#: OpenAI chat format overhead (OpenAI cookbook, every chat model since gpt-3.5-turbo-0613).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Provider prefixes under which OpenAI's own models are served with OpenAI's tokenizer.
_OPENAI_PREFIXES = ("openai/", "azure/", "azure_ai/", "text-completion-openai/", "openrouter/openai/")


class TokenizerDataError(RuntimeError):
    """The shipped BPE data is missing or does not match tiktoken's expected digest."""


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count, whether it is an approximation, and the encoding that produced it."""

    tokens: int
    estimated: bool
    encoding: str


def decode_rank_file(gz_bytes: bytes, expected_sha256: str, name: str = "encoding") -> dict[bytes, int]:
    """Gunzip a ``.tiktoken`` rank file, verify its digest, and parse ``base64-token rank`` lines.

    The digest is over the decompressed bytes, exactly as tiktoken's ``load_tiktoken_bpe`` checks the download,
    so a corrupted or substituted file is refused instead of silently miscounting.
    """
    try:
        raw = gzip.decompress(gz_bytes)
    except (OSError, EOFError) as exc:
        raise TokenizerDataError(f"{name}: shipped BPE data is not valid gzip: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise TokenizerDataError(f"{name}: BPE data hash mismatch (got {digest}, expected {expected_sha256})")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if not line:
            continue
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _read_shipped(filename: str) -> bytes:
    try:
        return resources.files("costplane.pricing").joinpath("tokenizer_data", filename).read_bytes()
    except OSError as exc:
        raise TokenizerDataError(f"shipped BPE data {filename} is missing: {exc}") from exc


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The named encoding, built once per process from the shipped, hash-checked data (no network)."""
    try:
        spec = ENCODINGS[name]
    except KeyError:
        raise ValueError(f"unknown encoding {name!r}; shipped: {', '.join(sorted(ENCODINGS))}") from None
    ranks = decode_rank_file(_read_shipped(spec.filename), spec.sha256, spec.name)
    return tiktoken.Encoding(
        name=spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )


@functools.lru_cache(maxsize=4096)
def encoding_for_model(model: str) -> tuple[str, bool]:
    """``(encoding name, estimated)`` for a model name, with or without a provider prefix.

    tiktoken's own (offline) model table decides for OpenAI models; harmony models share o200k's ranks, so plain
    text counts are exact. Legacy r50k/p50k models and every non-OpenAI model get an estimate.
    """
    name = model.strip()
    lowered = name.lower()
    for prefix in _OPENAI_PREFIXES:
        if lowered.startswith(prefix):
            name = name[len(prefix) :]
            break
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return FALLBACK_ENCODING, True
    if encoding == "o200k_harmony":
        return "o200k_base", False
    if encoding in ENCODINGS:
        return encoding, False
    return FALLBACK_ENCODING, True


def _encode_len(encoding: tiktoken.Encoding, text: str) -> int:
    # Special-token text in user content is counted as ordinary text, as the provider would bill it.
    return len(encoding.encode(text, disallowed_special=()))


def count_text(text: str, model: str) -> TokenCount:
    """Tokens in a plain text for ``model`` (no chat framing)."""
    name, estimated = encoding_for_model(model)
    return TokenCount(tokens=_encode_len(get_encoding(name), text), estimated=estimated, encoding=name)


def _content_texts(content: Any) -> tuple[list[str], bool]:
    """Text pieces of a message's content, and whether non-text parts (images, audio, files) were skipped."""
    if content is None:
        return [], False
    if isinstance(content, str):
        return [content], False
    if isinstance(content, Iterable) and not isinstance(content, bytes | Mapping):
        texts: list[str] = []
        skipped = False
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                skipped = True
        return texts, skipped
    return [json.dumps(content, sort_keys=True, default=str)], True


def count_messages(messages: list[dict[str, Any]], model: str) -> TokenCount:
    """Prompt tokens of an OpenAI-style chat message list, with the chat format's per-message overhead.

    Every message costs 3 tokens of framing plus its role and content, a ``name`` one more, and the reply is primed
    with 3 tokens (OpenAI cookbook). Tool calls are counted from their JSON and images or other non-text parts are
    not counted, so either makes the result an estimate.
    """
    name, estimated = encoding_for_model(model)
    encoding = get_encoding(name)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"chat messages must be objects, got {type(message).__name__}")
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                texts, skipped = _content_texts(value)
                total += sum(_encode_len(encoding, t) for t in texts)
                estimated = estimated or skipped
            elif key == "name" and isinstance(value, str):
                total += _encode_len(encoding, value) + TOKENS_PER_NAME
            elif key == "role" and isinstance(value, str):
                total += _encode_len(encoding, value)
            elif key in ("tool_calls", "function_call") and value:
                total += _encode_len(encoding, json.dumps(value, sort_keys=True, default=str))
                estimated = True
            elif isinstance(value, str):
                total += _encode_len(encoding, value)
    return TokenCount(tokens=total, estimated=estimated, encoding=name)
