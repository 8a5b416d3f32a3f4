"""Transports that wrap the SDK's httpx transport: each HTTP request to a model endpoint is one :class:`Attempt`.

The SDK retries by sending again through the same httpx client, so every retry passes here. The response's byte
stream is wrapped to see the body as the SDK reads it: the attempt ends when the body ends, is closed early
(an abandoned stream), or fails. The wrappers subclass the byte-stream classes of whichever httpx flavour the
client uses (``httpx2``, or ``httpx`` when the app passed its own ``http_client``), because httpx checks them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from costplane.integrations.recorder import CURRENT_CALL, Attempt, Instrumentation
from costplane.integrations.wire import BodyReader, RequestInfo, parse_request


def _library(obj: Any) -> ModuleType:
    """The httpx flavour (module) an object comes from."""
    return sys.modules[type(obj).__module__.split(".")[0]]


def _begin(instr: Instrumentation, request: Any) -> tuple[Attempt, bool] | None:
    """The attempt for a model-call request (None for other requests), and whether its usage chunk was added."""
    try:
        try:
            content = request.content
        except Exception:  # noqa: BLE001 - a streamed upload (files): not a model call we can read
            return None
        call = CURRENT_CALL.get()
        info: RequestInfo | None = parse_request(
            request.method, request.url.path, content, call.body if call is not None else None
        )
        if info is None:
            return None
        headers = request.headers
        attempt = Attempt(
            instr,
            info,
            call,
            headers.get("x-stainless-retry-count"),
            headers.get("idempotency-key") or headers.get("x-stainless-idempotency-key"),
        )
        added = call is not None and call.added_usage_chunk and instr.strip_added_usage_chunk
        return attempt, added
    except Exception as exc:  # noqa: BLE001 - the request goes out unrecorded rather than failing
        instr.internal_error("begin", exc)
        return None


def _attach(attempt: Attempt, response: Any, drop: bool) -> BodyReader | None:
    try:
        headers = response.headers
        reader = attempt.on_response(
            response.status_code, headers.get("content-type", ""), headers.get("content-encoding", ""), drop
        )
        if reader.sse and drop and response.status_code < 400:
            # The reader forwards decoded bytes (without the usage chunk the app did not ask for).
            if "content-encoding" in headers:
                del headers["content-encoding"]
            if "content-length" in headers:
                del headers["content-length"]
        return reader
    except Exception as exc:  # noqa: BLE001 - unread body: the attempt is still emitted, as unknown usage
        attempt.instr.internal_error("response", exc)
        return None


@contextlib.contextmanager
def _ended_on_error(attempt: Attempt) -> Iterator[None]:
    """The request failed (or was cancelled) before a response: the attempt ends with that error, which propagates."""
    try:
        yield
    except BaseException as exc:
        attempt.end(body_ended=False, exc=exc)
        raise


def _observed(attempt: Attempt, response: Any, drop: bool, stream_class: Callable[[ModuleType], type]) -> Any:
    """The response with its body stream wrapped so the attempt sees it (sync or async: ``stream_class`` picks);
    a body that cannot be read ends the attempt now, as unknown usage."""
    reader = _attach(attempt, response, drop)
    if reader is None:
        attempt.end(body_ended=False)
        return response
    response.stream = stream_class(_library(response))(
        response.stream, attempt, reader, drop and reader.sse and response.status_code < 400
    )
    return response


class InstrumentedTransport:
    """Wraps a synchronous httpx transport (``handle_request``)."""

    def __init__(self, inner: Any, instr: Instrumentation) -> None:
        self.inner = inner
        self.instr = instr

    def handle_request(self, request: Any) -> Any:
        begun = _begin(self.instr, request)
        if begun is None:
            return self.inner.handle_request(request)
        attempt, drop = begun
        with _ended_on_error(attempt):
            response = self.inner.handle_request(request)
        return _observed(attempt, response, drop, _sync_stream_class)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> InstrumentedTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)


class AsyncInstrumentedTransport:
    """Wraps an asyncio httpx transport (``handle_async_request``)."""

    def __init__(self, inner: Any, instr: Instrumentation) -> None:
        self.inner = inner
        self.instr = instr

    async def handle_async_request(self, request: Any) -> Any:
        begun = _begin(self.instr, request)
        if begun is None:
            return await self.inner.handle_async_request(request)
        attempt, drop = begun
        with _ended_on_error(attempt):  # a cancelled task too: its attempt is emitted as cancelled
            response = await self.inner.handle_async_request(request)
        return _observed(attempt, response, drop, _async_stream_class)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncInstrumentedTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)


def _feed(attempt: Attempt, reader: BodyReader, chunk: bytes) -> bytes:
    try:
        return reader.feed(chunk)
    except Exception as exc:  # noqa: BLE001 - a reader bug must not cut the app's stream
        attempt.instr.internal_error("read", exc)
        return b""


def _pass_on(attempt: Attempt, reader: BodyReader, chunk: bytes, rewrite: bool) -> bytes | None:
    """What the app gets for one chunk of the body, after the reader has seen it; None: nothing this time.

    One function for the sync and the async stream, so both hand the app exactly the same bytes: the chunk itself,
    or, when the reader rewrites the body, what the reader gives back for it (it may hold bytes back).
    """
    out = _feed(attempt, reader, chunk)
    if not rewrite:
        return chunk
    return out or None


def _held_back(reader: BodyReader, rewrite: bool) -> bytes:
    """The bytes a rewriting reader still holds when the body has ended (empty: nothing more to give the app)."""
    return reader.rest() if rewrite else b""


@functools.cache
def _sync_stream_class(lib: ModuleType) -> type:
    base: type = lib.SyncByteStream

    class ObservedStream(base):  # type: ignore[misc, valid-type]
        """The body as the SDK reads it, seen by the attempt on the way."""

        def __init__(self, inner: Any, attempt: Attempt, reader: BodyReader, rewrite: bool) -> None:
            self._inner, self._attempt, self._reader, self._rewrite = inner, attempt, reader, rewrite

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self._inner:
                    out = _pass_on(self._attempt, self._reader, chunk, self._rewrite)
                    if out is not None:
                        yield out
                rest = _held_back(self._reader, self._rewrite)
                if rest:
                    yield rest
            except GeneratorExit:
                raise  # the reader stopped early; close() ends the attempt as cancelled
            except BaseException as exc:
                self._attempt.end(body_ended=False, exc=exc)
                raise
            self._attempt.end(body_ended=True)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._attempt.end(body_ended=False)
                _settle_after(self._attempt)

    return ObservedStream


@functools.cache
def _async_stream_class(lib: ModuleType) -> type:
    base: type = lib.AsyncByteStream

    class AsyncObservedStream(base):  # type: ignore[misc, valid-type]
        """:class:`ObservedStream` for asyncio clients."""

        def __init__(self, inner: Any, attempt: Attempt, reader: BodyReader, rewrite: bool) -> None:
            self._inner, self._attempt, self._reader, self._rewrite = inner, attempt, reader, rewrite

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._inner:
                    out = _pass_on(self._attempt, self._reader, chunk, self._rewrite)
                    if out is not None:
                        yield out
                rest = _held_back(self._reader, self._rewrite)
                if rest:
                    yield rest
            except GeneratorExit:
                raise
            except BaseException as exc:
                self._attempt.end(body_ended=False, exc=exc)
                raise
            self._attempt.end(body_ended=True)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._attempt.end(body_ended=False)
                await _asettle_after(self._attempt)

    return AsyncObservedStream


def _settle_after(attempt: Attempt) -> None:
    from costplane.integrations.recorder import settle_sync

    settle_sync(attempt.instr, attempt.call)


async def _asettle_after(attempt: Attempt) -> None:
    from costplane.integrations.recorder import settle_async

    await settle_async(attempt.instr, attempt.call)


def wrap_http_client(http_client: Any, instr: Instrumentation, *, is_async: bool) -> None:
    """Put the instrumented transport around the client's transport and every mounted one (proxies)."""
    wrapper = AsyncInstrumentedTransport if is_async else InstrumentedTransport
    current = http_client._transport
    if not isinstance(current, InstrumentedTransport | AsyncInstrumentedTransport):
        http_client._transport = wrapper(current, instr)
    mounts = getattr(http_client, "_mounts", None)
    if isinstance(mounts, dict):
        for pattern, transport in list(mounts.items()):
            if transport is not None and not isinstance(transport, InstrumentedTransport | AsyncInstrumentedTransport):
                mounts[pattern] = wrapper(transport, instr)
