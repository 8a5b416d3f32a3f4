"""What the OpenAI and Anthropic integrations share: instrumenting one client object of a Stainless-built SDK.

Both SDKs keep their httpx client in ``client._client``, send every attempt through it, and route each API call
through the client's ``request`` method, where the retry loop lives; ``copy`` / ``with_options`` make a client that
shares the httpx client. The instrumented client keeps all of that: it only gains a wrapped transport and an
instance-level ``request`` (and ``copy`` / ``with_options`` that instrument the copy the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from costplane.integrations.calls import wrap_request_async, wrap_request_sync
from costplane.integrations.recorder import Instrumentation
from costplane.integrations.transport import wrap_http_client

_MARK = "_costplane_instrumentation"
ClientT = TypeVar("ClientT")
C = TypeVar("C")


class Instrument(Protocol):
    """An SDK integration's ``instrument(client, *, publisher, guard=None, fallback=None, **attributes)``.

    Instruments ``client`` in place and returns it. ``attributes`` (``tenant``, ``feature``, ``team``, ``env``,
    ``plan``, ``user_id``… or any other key) go on every event; ``costplane.attributes(...)`` adds per-call ones.
    With ``guard`` (a ``BudgetGuard`` or ``AsyncBudgetGuard``) each call reserves its worst case first; a Block
    raises the integration's ``BudgetExceeded``, or returns ``fallback(answer)`` when a fallback is given.
    """

    def __call__(
        self,
        client: C,
        *,
        publisher: Any,
        guard: Any = None,
        fallback: Callable[[Any], Any] | None = None,
        **attributes: Any,
    ) -> C: ...


def sdk_instrument(
    sync_client: type, async_client: type, provider: Callable[[Any], str], error: Callable[[Any], BaseException]
) -> Instrument:
    """The ``instrument`` function of one SDK: its client classes, the provider a client reports as, and the
    ``BudgetExceeded`` (an error of that SDK, so the app's handlers catch it) a Block raises."""
    names = " or ".join(f"{t.__module__.split('.')[0]}.{t.__name__}" for t in (sync_client, async_client))

    def instrument(
        client: C,
        *,
        publisher: Any,
        guard: Any = None,
        fallback: Callable[[Any], Any] | None = None,
        **attributes: Any,
    ) -> C:
        if not isinstance(client, sync_client | async_client):
            raise TypeError(f"expected an {names} client, got {type(client).__name__}")
        return instrument_client(
            client,
            is_async=isinstance(client, async_client),
            provider=provider(client),
            publisher=publisher,
            guard=guard,
            fallback=fallback,
            attributes=attributes,
            error=error,
        )

    instrument.__doc__ = Instrument.__doc__
    return instrument


def instrument_client(
    client: ClientT,
    *,
    is_async: bool,
    provider: str,
    publisher: Any,
    guard: Any,
    fallback: Callable[[Any], Any] | None,
    attributes: Mapping[str, Any],
    error: Callable[[Any], BaseException],
) -> ClientT:
    """Instrument ``client`` in place and return it; a client instrumented before is returned unchanged."""
    if getattr(client, _MARK, None) is not None:
        return client
    instr = Instrumentation(
        publisher=publisher, provider=provider, attributes=attributes, guard=guard, fallback=fallback
    )
    _instrument(client, instr, is_async, error)
    return client


def _instrument(client: Any, instr: Instrumentation, is_async: bool, error: Callable[[Any], BaseException]) -> None:
    wrap_http_client(client._client, instr, is_async=is_async)
    wrap = wrap_request_async if is_async else wrap_request_sync
    client.request = wrap(instr, client.request, error)
    original_copy = client.copy

    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original_copy(*args, **kwargs)
        _instrument(new, instr, is_async, error)
        return new

    client.copy = copy
    client.with_options = copy
    setattr(client, _MARK, instr)
