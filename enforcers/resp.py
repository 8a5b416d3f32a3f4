"""Pre-encoded Redis protocol (RESP2) pieces for the guard's two scripts.

redis-py's generic command path (argument type checks, encoding, observability hooks) costs more per call than the
reserve script itself takes on the server. The keys and the per-budget arguments of a call's plan only change when
a counter bucket rolls over, so they are encoded once per plan and a call only encodes its few varying numbers.
"""

from __future__ import annotations

from collections.abc import Iterable


def bulk(value: str | int | bytes) -> bytes:
    """One RESP bulk string."""
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def bulks(values: Iterable[str | int | bytes]) -> bytes:
    return b"".join(bulk(v) for v in values)
