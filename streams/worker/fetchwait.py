"""How long the broker may hold the stream consumer's fetch: Faust fixes it at 1.5 s, which delays decisions.

aiokafka does not ask again for a partition whose fetched records the stream has not consumed yet. When the
stream is a little behind on a busy partition, the next fetch request covers only the other partitions, and when
they are idle the broker holds it for ``fetch_max_wait_ms``. New records on the busy partition then wait behind
that request. With Faust's fixed 1,500 ms, decisions at 5,000 events/s took 1.0–1.4 s after a backlog (p50)
instead of about 150 ms, while every process was half idle. Faust offers no setting for it, so the worker sets the
value on the consumer's fetcher once the consumer exists.
"""

from __future__ import annotations

from typing import Any


def set_fetch_max_wait(consumer: Any, ms: int) -> bool:
    """Set ``fetch_max_wait_ms`` on the aiokafka fetcher behind a Faust consumer; False when the objects are not
    where faust-streaming keeps them (another version), so the caller can say the setting is not applied."""
    fetcher = getattr(getattr(getattr(consumer, "_thread", None), "_consumer", None), "_fetcher", None)
    if fetcher is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
        return False
    fetcher._fetch_max_wait_ms = ms
    return True
