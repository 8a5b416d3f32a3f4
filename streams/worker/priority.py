"""The sink runs below the stream role's CPU priority: decisions are latency-critical, ClickHouse rows are not.

On a host whose cores the stream role shares with a sink (``--role all``, or both roles on one machine), the sink's
batch inserts come in bursts of CPU; at the same priority they delay the stream's next batch and with it every
decision. A higher nice value only matters when the CPU is contended: the sink then lags a little more (its lag
metric shows it) and catches up when the load eases, while enforcement keeps its latency.
"""

from __future__ import annotations

import os

from costplane.logging import get_logger

log = get_logger(__name__)


def lower_priority(nice: int) -> int:
    """Raise the calling thread's nice value by ``nice`` (threads it starts later inherit it); returns the new
    value. On Linux the nice value belongs to a thread, so a process lowers itself from its main thread before
    starting others. A platform or sandbox that refuses is logged and left as it is: this is an optimisation."""
    if nice <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19))
    except OSError as exc:
        log.warning("sink_priority_unchanged", error=str(exc))
    return os.getpriority(os.PRIO_PROCESS, 0)
