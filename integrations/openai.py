"""``instrument(client, publisher=...)`` for ``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI`` and ``AsyncAzureOpenAI``.

Every HTTP attempt of a chat completion, Responses API call, completion or embedding — including the SDK's own
retries — becomes one usage event. See docs/integrations.md.
"""

from __future__ import annotations

from typing import Any

import openai as _openai

from costplane.integrations.errors import BudgetExceeded as _BudgetExceeded
from costplane.integrations.sdk import Instrument, sdk_instrument


class BudgetExceeded(_BudgetExceeded, _openai.OpenAIError):
    """The budget guard blocked the call; an ``openai.OpenAIError``, so the app's OpenAI handlers catch it."""


def _provider(client: Any) -> str:
    return "azure" if isinstance(client, _openai.AzureOpenAI | _openai.AsyncAzureOpenAI) else "openai"


#: ``instrument(client, *, publisher, guard=None, fallback=None, **attributes)``: see :class:`sdk.Instrument`.
instrument: Instrument = sdk_instrument(_openai.OpenAI, _openai.AsyncOpenAI, _provider, BudgetExceeded)
