"""``BudgetExceeded``: the one exception the instrumentation raises into the app, when the guard blocks a call.

Each SDK integration raises a subclass that also derives from that SDK's own error base class (``openai.OpenAIError``,
``anthropic.AnthropicError``), so handlers the app already has for the SDK's errors catch it too.
"""

from __future__ import annotations

from typing import Any


class BudgetExceeded(Exception):  # noqa: N818 - the name says what happened, as the SDKs' own errors do
    """A model call refused by the budget guard before it was sent.

    ``reason`` is the guard's reason code, ``retry_after_s`` when the scope may try again, ``answer`` the guard's
    whole answer.
    """

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.reason: str = str(getattr(answer, "reason", "") or "budget_exceeded")
        self.retry_after_s: float = float(getattr(answer, "retry_after_s", 0.0) or 0.0)
        super().__init__(f"model call blocked by budget: {self.reason} (retry after {self.retry_after_s:g}s)")
