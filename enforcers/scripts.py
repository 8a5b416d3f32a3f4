"""The guard's Lua scripts and their SHA1 digests, loaded once per process.

The digests are constants of the sources, so a plan can carry its ``EVALSHA`` commands fully encoded.
"""

from __future__ import annotations

import hashlib
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
SHAS = {name: hashlib.sha1(src.encode()).hexdigest().encode() for name, src in SOURCES.items()}
