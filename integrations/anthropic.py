"""``instrument(client, publisher=...)`` for ``Anthropic`` and ``AsyncAnthropic``.

Every HTTP attempt of a Messages call — including the SDK's own retries — becomes one usage event, streamed or not.
See docs/integrations.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anthropic as _anthropic

from costplane.integrations.errors import BudgetExceeded as _BudgetExceeded
from costplane.integrations.sdk import instrument_client

ClientT = TypeVar("ClientT")


class BudgetExceeded(_BudgetExceeded, _anthropic.AnthropicError):
    """The budget guard blocked the call; an ``anthropic.AnthropicError``, so the app's handlers catch it."""


def instrument(
    client: ClientT,
    *,
    publisher: Any,
    guard: Any = None,
    fallback: Callable[[Any], Any] | None = None,
    **attributes: Any,
) -> ClientT:
    """Instrument ``client`` in place and return it; the arguments are those of the OpenAI integration's."""
    if not isinstance(client, _anthropic.Anthropic | _anthropic.AsyncAnthropic):
        raise TypeError(
            f"expected an anthropic.Anthropic or anthropic.AsyncAnthropic client, got {type(client).__name__}"
        )
    return instrument_client(
        client,
        is_async=isinstance(client, _anthropic.AsyncAnthropic),
        provider="anthropic",
        publisher=publisher,
        guard=guard,
        fallback=fallback,
        attributes=attributes,
        error=BudgetExceeded,
    )
