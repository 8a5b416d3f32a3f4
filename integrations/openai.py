"""``instrument(client, publisher=...)`` for ``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI`` and ``AsyncAzureOpenAI``.

Every HTTP attempt of a chat completion, Responses API call, completion or embedding — including the SDK's own
retries — becomes one usage event. See docs/integrations.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import openai as _openai

from costplane.integrations.errors import BudgetExceeded as _BudgetExceeded
from costplane.integrations.sdk import instrument_client

ClientT = TypeVar("ClientT")


class BudgetExceeded(_BudgetExceeded, _openai.OpenAIError):
    """The budget guard blocked the call; an ``openai.OpenAIError``, so the app's OpenAI handlers catch it."""


def instrument(
    client: ClientT,
    *,
    publisher: Any,
    guard: Any = None,
    fallback: Callable[[Any], Any] | None = None,
    **attributes: Any,
) -> ClientT:
    """Instrument ``client`` in place and return it.

    ``attributes`` (``tenant``, ``feature``, ``team``, ``env``, ``plan``, ``user_id``… or any other key) go on every
    event; ``costplane.attributes(...)`` adds per-call ones. With ``guard`` (a ``BudgetGuard`` or
    ``AsyncBudgetGuard``) each call reserves its worst case first; a Block raises :class:`BudgetExceeded`, or
    returns ``fallback(answer)`` when a fallback is given.
    """
    if not isinstance(client, _openai.OpenAI | _openai.AsyncOpenAI):
        raise TypeError(f"expected an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}")
    provider = "azure" if isinstance(client, _openai.AzureOpenAI | _openai.AsyncAzureOpenAI) else "openai"
    return instrument_client(
        client,
        is_async=isinstance(client, _openai.AsyncOpenAI),
        provider=provider,
        publisher=publisher,
        guard=guard,
        fallback=fallback,
        attributes=attributes,
        error=BudgetExceeded,
    )
