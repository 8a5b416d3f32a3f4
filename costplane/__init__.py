"""costplane: an event-streaming cost control plane for LLM API spend."""

from costplane.integrations.context import attributes

__version__ = "0.1.0"
__all__ = ["__version__", "attributes"]
