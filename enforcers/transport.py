"""The guard's transport: its own Redis connections, carrying pre-encoded commands and the replies of settles.

Two reasons it does not borrow from redis-py's connection pool:

- Borrowing and returning one of the pool's connections runs its observability hooks and a ``poll()`` system
  call (to see whether a returned connection still holds data): about 11 µs per command on the benchmark machine,
  more than the reserve script's own logic. Here a connection is taken from and given back to a deque (both
  atomic in CPython, so no lock), and no poll is needed: a connection is only given back in step, every reply it
  owes either read or accounted for below, and one that failed is dropped, never reused.
- A settle has nothing to tell the app. :meth:`Lanes.send_later` writes its script and returns; its reply stays
  unread until the same connection's next command has been sent, and is read then, while Redis runs that command.
  Redis runs one connection's commands in order, so a settle is applied before anything sent after it on the same
  connection; the app pays one send, not a round trip.

A reply to a settle that says ``NOSCRIPT`` (Redis restarted or flushed its scripts) makes the lane load the guard's
scripts and send that settle again. A connection that fails takes its unconfirmed settles with it: they are logged
and their reservations expire by their TTL, as when a settle itself fails. :meth:`Lanes.flush` reads every reply
still owed (tests, benchmarks, process exit).
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections import deque
from typing import Any

import redis
from redis.exceptions import NoScriptError

from costplane.enforcers.resp import bulk
from costplane.enforcers.scripts import SOURCES
from costplane.logging import get_logger

log = get_logger("costplane.guard")
SCRIPT_LOAD = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n"
#: The errors after which a connection's replies can no longer be matched to its commands.
BROKEN = (redis.ConnectionError, redis.TimeoutError, OSError)


class Lane:
    """One connection and the settles written on it whose replies have not been read yet."""

    __slots__ = ("conn", "unread")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.unread: deque[bytes] = deque()


class Lanes:
    """The guard's connections to one Redis (same class and settings as the client's pool: TLS, auth, db)."""

    def __init__(self, pool: redis.ConnectionPool, *, max_unread: int = 64) -> None:
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self.max_unread = max_unread
        self._free: deque[Lane] = deque()
        ref = weakref.ref(self)

        def forget_in_child() -> None:  # a forked child must never share its parent's sockets
            lanes = ref()
            if lanes is not None:
                lanes._free.clear()

        def flush_at_exit() -> None:
            lanes = ref()
            if lanes is not None:
                try:
                    lanes.flush()
                except (redis.RedisError, OSError) as exc:
                    log.warning("settles not confirmed at exit", error=repr(exc))

        os.register_at_fork(after_in_child=forget_in_child)
        atexit.register(flush_at_exit)

    # -- lanes ------------------------------------------------------------------------------------------------
    def _take(self) -> Lane:
        try:
            return self._free.pop()  # the most recently used: a single-threaded app keeps one connection
        except IndexError:
            return Lane(self._connection_class(**self._connection_kwargs))

    def _drop(self, lane: Lane) -> None:
        if lane.unread:
            log.warning(
                "settles not confirmed: their connection failed; the reservations expire by their TTL",
                settles=len(lane.unread),
            )
            lane.unread.clear()
        lane.conn.disconnect()  # a late reply must never be read as the next command's answer

    # -- commands ---------------------------------------------------------------------------------------------
    def send(self, packed: bytes) -> Lane:
        """Write a command whose reply :meth:`receive` reads (the lane stays taken until then)."""
        lane = self._take()
        try:
            lane.conn.send_packed_command([packed], check_health=False)
        except BaseException:
            self._drop(lane)
            raise
        return lane

    def receive(self, lane: Lane, packed: bytes) -> Any:
        """The reply to ``packed``, sent by :meth:`send` on ``lane``, after the settles' replies owed before it."""
        try:
            missing = self._read_unread(lane)
            try:
                reply = lane.conn.read_response()
            except NoScriptError:
                missing.append(packed)
                reply = None
            if missing:
                reply = self._resend(lane, missing, own=packed if missing[-1] is packed else None)
        except redis.ResponseError:
            self._free.append(lane)  # an error reply keeps the connection in step
            raise
        except BaseException:
            self._drop(lane)
            raise
        self._free.append(lane)
        return reply

    def roundtrip(self, packed: bytes) -> Any:
        return self.receive(self.send(packed), packed)

    def send_later(self, packed: bytes) -> None:
        """Write a command whose reply nobody waits for (a settle): read by the lane's next command."""
        lane = self._take()
        try:
            if len(lane.unread) >= self.max_unread:  # an app that only settles: keep what is owed bounded
                missing = self._read_unread(lane)
                if missing:
                    self._resend(lane, missing, own=None)
            lane.conn.send_packed_command([packed], check_health=False)
        except BaseException:
            self._drop(lane)
            raise
        lane.unread.append(packed)
        self._free.append(lane)

    def flush(self) -> None:
        """Read every reply still owed on every idle lane (settles confirmed, or resent after ``NOSCRIPT``)."""
        lanes = []
        while True:
            try:
                lanes.append(self._free.pop())
            except IndexError:
                break
        try:
            while lanes:
                lane = lanes.pop()
                try:
                    missing = self._read_unread(lane)
                    if missing:
                        self._resend(lane, missing, own=None)
                except BaseException:
                    self._drop(lane)
                    raise
                self._free.append(lane)
        finally:
            self._free.extend(lanes)

    # -- replies ----------------------------------------------------------------------------------------------
    def _read_unread(self, lane: Lane) -> list[bytes]:
        """Read the settles' replies owed on ``lane``; the settles that found no script, to send again."""
        missing: list[bytes] = []
        unread, read = lane.unread, lane.conn.read_response
        while unread:
            packed = unread[0]
            try:
                read()
            except NoScriptError:
                missing.append(packed)
            except redis.ResponseError as exc:  # refused by the script: nothing to retry, the connection is in step
                log.warning("a settle was refused by Redis", error=str(exc)[:200])
            unread.popleft()
        return missing

    def _resend(self, lane: Lane, missing: list[bytes], *, own: bytes | None) -> Any:
        """Load the guard's scripts, then send each command in ``missing`` again; the reply to ``own`` (if any)."""
        conn = lane.conn
        for src in SOURCES.values():
            conn.send_packed_command([SCRIPT_LOAD + bulk(src)], check_health=False)
            conn.read_response()
        reply = None
        for packed in missing:
            conn.send_packed_command([packed], check_health=False)
            if packed is own:
                reply = conn.read_response()
                continue
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                log.warning("a settle was refused by Redis", error=str(exc)[:200])
        return reply
