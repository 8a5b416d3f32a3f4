"""Per-call attributes without threading arguments through the app: ``with costplane.attributes(feature=...)``.

A context variable, so each thread and each asyncio task sees the attributes of the block it runs in (a task
copies its creator's context when it is created). Nested blocks add to and override the outer ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_ATTRIBUTES: ContextVar[Mapping[str, Any]] = ContextVar("costplane_attributes", default=_EMPTY)


@contextmanager
def attributes(**values: Any) -> Iterator[Mapping[str, Any]]:
    """Attach ``values`` (``feature``, ``user_id``, ``session_id``, ``turn``, ``team``, ``env``, ``plan``,
    ``tenant`` or any other key, which goes into the event's ``attributes`` map) to every model call in the block.

    A value of ``None`` removes a key set by an outer block.
    """
    merged = {**_ATTRIBUTES.get(), **values}
    token = _ATTRIBUTES.set(MappingProxyType({k: v for k, v in merged.items() if v is not None}))
    try:
        yield _ATTRIBUTES.get()
    finally:
        _ATTRIBUTES.reset(token)


def current_attributes() -> Mapping[str, Any]:
    """The attributes of the innermost :func:`attributes` block (read-only; empty outside any block)."""
    return _ATTRIBUTES.get()
