"""The guard's Lua scripts, read once per process (redis-py's ``Script`` objects send them by digest)."""

from __future__ import annotations

from importlib import resources


def source(name: str) -> str:
    return resources.files("costplane.enforcers").joinpath(f"lua/{name}.lua").read_text()


#: Shared Lua functions, prepended to the scripts that call them (Redis scripts cannot call each other).
SET_COUNTER = source("set_counter")
SWEEP = source("sweep")
SOURCES = {
    "reserve": SWEEP + source("reserve"),
    "settle": SWEEP + source("settle"),
    "reconcile": SET_COUNTER + source("reconcile"),
}
