"""costplane: an event-streaming cost control plane for LLM API spend."""

__version__ = "0.1.0"
