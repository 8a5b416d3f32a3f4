"""The app-side publisher: one Avro usage event per model-call attempt, batched, spooled, never in the way."""

from costplane.publisher.adapters import (
    parse_usage,
    usage_from_anthropic,
    usage_from_bedrock,
    usage_from_cohere,
    usage_from_gemini,
    usage_from_openai,
    usage_from_response,
)
from costplane.publisher.attempts import AttemptRecorder, RequestRecorder
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.publisher import UsagePublisher
from costplane.publisher.testing import InMemoryPublisher
from costplane.publisher.validation import InvalidEvent

__all__ = [
    "AttemptRecorder",
    "InMemoryPublisher",
    "InvalidEvent",
    "RequestRecorder",
    "UsageCodec",
    "UsageEvent",
    "UsagePublisher",
    "parse_usage",
    "usage_from_anthropic",
    "usage_from_bedrock",
    "usage_from_cohere",
    "usage_from_gemini",
    "usage_from_openai",
    "usage_from_response",
]
