"""``CostplaneLogger``: a LiteLLM ``CustomLogger`` that records every attempt LiteLLM makes as one usage event.

LiteLLM calls a logger once per attempt — each retry and each fallback deployment's call fails or succeeds on its
own — and gives all attempts of one request the same ``trace_id``. That becomes the event's ``request_id``, and the
logger numbers the attempts of a trace in the order their callbacks arrive.

    import litellm
    litellm.callbacks = [CostplaneLogger(publisher, tenant="acme", feature="search")]

LiteLLM's metadata is mapped: the end user (the request's ``user``, or the key's user) → ``user_id``, the key's
team → ``team``, the key's organisation → ``tenant`` (else the logger's ``tenant``), request tags → the ``tags``
attribute. LiteLLM runs the callbacks with a copy of the caller's context, so ``costplane.attributes(...)`` blocks
apply too.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from costplane.integrations.context import current_attributes
from costplane.integrations.fields import event_fields
from costplane.publisher.adapters import parse_usage
from costplane.publisher.metrics import RateLimitedLog

_NAMESPACE = uuid.UUID("0e7f5d1c-2b3a-4c5d-8e9f-a0b1c2d3e4f5")
#: Traces whose attempt counters are remembered (oldest forgotten first).
MAX_TRACES = 10_000


def _status(slo: Mapping[str, Any], exception: Any) -> str:
    if slo.get("status") == "success":
        return "ok"
    info = slo.get("error_information") or {}
    code = str(info.get("error_code") or getattr(exception, "status_code", "") or "")
    kind = str(info.get("error_class") or type(exception).__name__).lower()
    if code == "429" or "ratelimit" in kind:
        return "rate_limited"
    if code == "408" or "timeout" in kind:
        return "timeout"
    return "error"


class CostplaneLogger(CustomLogger):  # type: ignore[misc]
    """One usage event per LiteLLM attempt, success or failure. Never raises into LiteLLM (counted and logged)."""

    def __init__(self, publisher: Any, *, tenant: str | None = None, **attributes: Any) -> None:
        super().__init__()
        self.publisher = publisher
        self.attributes = {"tenant": tenant, **attributes} if tenant else dict(attributes)
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._log = RateLimitedLog()

    # LiteLLM's hooks: the same mapping for sync and async calls (the publisher never blocks).
    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj)

    def _attempt(self, trace_id: str) -> int:
        with self._lock:
            number = self._attempts.pop(trace_id, 0) + 1
            self._attempts[trace_id] = number
            while len(self._attempts) > MAX_TRACES:
                self._attempts.popitem(last=False)
            return number

    def _record(self, kwargs: dict[str, Any], response_obj: Any) -> None:
        try:
            fields = self.fields(kwargs, response_obj)
            if fields is not None:
                self.publisher.record(**fields)
        except Exception as exc:  # noqa: BLE001 - a logger must never fail LiteLLM's call
            metrics = getattr(self.publisher, "metrics", None)
            if metrics is not None:
                metrics.errors.labels("instrumentation").inc()
            self._log.warning("litellm", "LiteLLM attempt not recorded", error=repr(exc))

    def fields(self, kwargs: Mapping[str, Any], response_obj: Any) -> dict[str, Any] | None:
        """The usage-event fields of one LiteLLM callback (None when it carries no standard logging payload)."""
        slo = kwargs.get("standard_logging_object")
        if not isinstance(slo, Mapping):
            return None
        meta = slo.get("metadata") or {}
        trace_id = str(slo.get("trace_id") or kwargs.get("litellm_call_id") or slo.get("id") or uuid.uuid4())
        provider = str(slo.get("custom_llm_provider") or "openai")
        model = str(slo.get("model") or kwargs.get("model") or "unknown")
        if model.startswith(provider + "/"):
            model = model[len(provider) + 1 :]
        base: dict[str, Any] = dict(self.attributes)
        org = meta.get("user_api_key_org_id")
        if org:
            base["tenant"] = org
        optional = kwargs.get("optional_params") or {}
        user = (
            slo.get("end_user")
            or meta.get("user_api_key_end_user_id")
            or optional.get("user")
            or kwargs.get("user")
            or meta.get("user_api_key_user_id")
        )
        if user:
            base["user_id"] = user
        team = meta.get("user_api_key_team_id") or meta.get("user_api_key_team_alias")
        if team:
            base["team"] = team
        tags = slo.get("request_tags")
        if isinstance(tags, list | tuple) and tags:
            base["tags"] = ",".join(str(t) for t in tags)
        if slo.get("model_group"):
            base["litellm_model_group"] = slo["model_group"]
        fields = event_fields(base, current_attributes())
        usage = (
            parse_usage(getattr(response_obj, "usage", None) or meta.get("usage_object"))
            if slo.get("status") == "success"
            else None
        )
        if usage is None and slo.get("status") == "success":
            usage = {
                "input_tokens": int(slo.get("prompt_tokens") or 0),
                "output_tokens": int(slo.get("completion_tokens") or 0),
            }
        start, end = slo.get("startTime"), slo.get("endTime")
        max_tokens = optional.get("max_tokens") or optional.get("max_completion_tokens")
        fields.update(usage or {})
        fields.update(
            event_id=str(uuid.uuid5(_NAMESPACE, f"{trace_id}:{slo.get('id')}")),
            request_id=trace_id,
            attempt=self._attempt(trace_id),
            status=_status(slo, kwargs.get("exception")),
            provider=provider,
            model=model,
            operation="embedding" if "embedding" in str(slo.get("call_type") or "") else "chat",
        )
        if isinstance(end, int | float):
            fields["occurred_at"] = int(end * 1000)
            if isinstance(start, int | float):
                fields["latency_ms"] = max(0, int((end - start) * 1000))
        if isinstance(max_tokens, int) and max_tokens >= 0:
            fields["max_tokens"] = max_tokens
        return fields
