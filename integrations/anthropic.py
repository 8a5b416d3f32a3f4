"""``instrument(client, publisher=...)`` for ``Anthropic`` and ``AsyncAnthropic``.

Every HTTP attempt of a Messages call — including the SDK's own retries — becomes one usage event, streamed or not.
See docs/integrations.md.
"""

from __future__ import annotations

import anthropic as _anthropic

from costplane.integrations.errors import BudgetExceeded as _BudgetExceeded
from costplane.integrations.sdk import Instrument, sdk_instrument


class BudgetExceeded(_BudgetExceeded, _anthropic.AnthropicError):
    """The budget guard blocked the call; an ``anthropic.AnthropicError``, so the app's handlers catch it."""


#: ``instrument(client, *, publisher, guard=None, fallback=None, **attributes)``: see :class:`sdk.Instrument`.
instrument: Instrument = sdk_instrument(
    _anthropic.Anthropic, _anthropic.AsyncAnthropic, lambda _client: "anthropic", BudgetExceeded
)
