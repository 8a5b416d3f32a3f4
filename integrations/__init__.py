"""Instrumentation for the model clients apps already use: every HTTP attempt becomes one usage event.

``costplane.integrations.openai.instrument(client, publisher=...)`` and
``costplane.integrations.anthropic.instrument(...)`` wrap the SDK's own HTTP client, so the attempts the SDK retries
on its own are recorded too. Nothing here imports a provider SDK until its integration module is imported.
"""

from costplane.integrations.context import attributes, current_attributes
from costplane.integrations.errors import BudgetExceeded

__all__ = ["BudgetExceeded", "attributes", "current_attributes"]
