"""The SDK-call level: around the client's ``request`` method, once per SDK call, outside its retry loop.

Here the call gets its request id and attributes, the guard reserves the call's worst case before anything is sent
(one reservation covers the retries), Degrade swaps the model, Block raises :class:`BudgetExceeded` (or returns the
fallback's answer), and a streamed OpenAI chat call is asked for its usage chunk. The reservation is settled with
the usage of every attempt once the call has returned and its last body has ended.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import Token
from typing import Any

from costplane.integrations.context import current_attributes
from costplane.integrations.fields import event_fields, guard_scope
from costplane.integrations.recorder import CURRENT_CALL, CallState, Instrumentation, settle_async, settle_sync
from costplane.integrations.wire import operation_for, prompt_of

#: Output tokens reserved for a call that names no limit (the guard needs a worst case).
DEFAULT_RESERVED_OUTPUT = 4096


def _json_of(options: Any) -> dict[str, Any] | None:
    data = getattr(options, "json_data", None)
    return data if isinstance(data, dict) else None


def _with_json(options: Any, data: dict[str, Any]) -> Any:
    """A copy of the SDK's request options with another JSON body (the caller's options stay as they were)."""
    copy = options.model_copy()
    copy.json_data = data
    return copy


class CallPlan:
    """What happens around one SDK call, decided before it is sent."""

    __slots__ = ("state", "options", "blocked")

    def __init__(self, state: CallState, options: Any, blocked: Any = None) -> None:
        self.state, self.options, self.blocked = state, options, blocked


def _plan(instr: Instrumentation, options: Any, stream: bool) -> CallPlan:
    """The call's state and (possibly rewritten) options; never raises (a failure sends the call as it was)."""
    state = CallState(event_fields(instr.attributes, current_attributes()))
    try:
        data = _json_of(options)
        url = str(getattr(options, "url", ""))
        if (
            stream
            and data is not None
            and url.rstrip("/").endswith("/chat/completions")
            and "stream_options" not in data
            and instr.provider in ("openai", "azure")
        ):
            data = {**data, "stream_options": {"include_usage": True}}
            options = _with_json(options, data)
            state.added_usage_chunk = True
        return CallPlan(state, options)
    except Exception as exc:  # noqa: BLE001 - send the call unchanged rather than fail it
        instr.internal_error("prepare", exc)
        return CallPlan(state, options)


def _reserve_args(instr: Instrumentation, plan: CallPlan) -> dict[str, Any] | None:
    """The guard's reserve() arguments for this call, or None when it is not a billed model call."""
    data = _json_of(plan.options)
    url = str(getattr(plan.options, "url", ""))
    if data is None or operation_for(str(getattr(plan.options, "method", "post")), url) is None:
        return None
    model = data.get("model")
    if not isinstance(model, str) or not model:
        return None
    default = 0 if url.rstrip("/").endswith("/embeddings") else DEFAULT_RESERVED_OUTPUT  # embeddings: no output
    max_tokens = next(
        (
            v
            for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
            if type(v := data.get(k)) is int and v >= 0
        ),
        default,
    )
    messages, prompt = prompt_of(data)
    return {
        "model": model,
        "provider": instr.provider,
        "messages": messages,
        "prompt": prompt if messages is None else None,
        "max_tokens": max_tokens,
    }


def _after_answer(instr: Instrumentation, plan: CallPlan, reservation: Any) -> None:
    """Keep the reservation on the call; on Degrade, send the cheaper model; on Block, mark the call blocked."""
    if not reservation.allowed:
        plan.blocked = reservation.answer
        return
    plan.state.reservation = reservation
    data = _json_of(plan.options)
    if data is not None and reservation.model != data.get("model"):
        plan.options = _with_json(plan.options, {**data, "model": reservation.model})


def _ask_guard(instr: Instrumentation, plan: CallPlan) -> Any:
    """The guard's answer to reserving this call (an awaitable from an async guard), or None when there is no
    guard, the call is not a billed model call, or asking failed (reported: the guard's own trouble never blocks
    a call by accident)."""
    if instr.guard is None:
        return None
    try:
        reserve = _reserve_args(instr, plan)
        return None if reserve is None else instr.guard.reserve(guard_scope(plan.state.fields), **reserve)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        instr.internal_error("reserve", exc)
        return None


def _take_answer(instr: Instrumentation, plan: CallPlan, reservation: Any) -> None:
    """:func:`_after_answer` for the guard's answer, if there is one; a failure is reported and the call sent."""
    if reservation is None:
        return
    try:
        _after_answer(instr, plan, reservation)
    except Exception as exc:  # noqa: BLE001 - as in _ask_guard
        instr.internal_error("reserve", exc)


def _sending(plan: CallPlan) -> Token[CallState | None]:
    """The call is about to go out: keep its final body and make it the current call (for the transport)."""
    plan.state.body = _json_of(plan.options)
    return CURRENT_CALL.set(plan.state)


def _returned(plan: CallPlan, token: Token[CallState | None]) -> None:
    """The SDK call has returned (or raised): it is no longer current, and may be settled."""
    CURRENT_CALL.reset(token)
    plan.state.returned = True


def _blocked(instr: Instrumentation, answer: Any, error: Callable[[Any], BaseException]) -> Any:
    if instr.fallback is not None:
        return instr.fallback(answer)
    raise error(answer)


def wrap_request_sync(
    instr: Instrumentation, original: Callable[..., Any], error: Callable[[Any], BaseException]
) -> Callable[..., Any]:
    """The instance's new ``request``: plan, reserve, send through the SDK (and its retries), settle."""

    def request(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        plan = _plan(instr, options, bool(kwargs.get("stream")))
        _take_answer(instr, plan, _ask_guard(instr, plan))
        if plan.blocked is not None:
            return _blocked(instr, plan.blocked, error)
        token = _sending(plan)
        try:
            return original(cast_to, plan.options, *args, **kwargs)
        finally:
            _returned(plan, token)
            settle_sync(instr, plan.state)

    return request


def wrap_request_async(
    instr: Instrumentation, original: Callable[..., Any], error: Callable[[Any], BaseException]
) -> Callable[..., Any]:
    """:func:`wrap_request_sync` for the asyncio clients (an async or a sync guard)."""

    async def request(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        plan = _plan(instr, options, bool(kwargs.get("stream")))
        reservation = _ask_guard(instr, plan)
        if inspect.isawaitable(reservation):
            try:
                reservation = await reservation
            except Exception as exc:  # noqa: BLE001 - as in _ask_guard
                instr.internal_error("reserve", exc)
                reservation = None
        _take_answer(instr, plan, reservation)
        if plan.blocked is not None:
            return _blocked(instr, plan.blocked, error)
        token = _sending(plan)
        try:
            return await original(cast_to, plan.options, *args, **kwargs)
        finally:
            _returned(plan, token)
            await settle_async(instr, plan.state)

    return request
