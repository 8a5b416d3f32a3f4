"""What the guard answers when Redis is unreachable or slow, and how it stops paying timeouts for a dead Redis.

Fail-open or fail-closed is an explicit choice per scope: e.g. fail-closed for the free tier's chat feature,
fail-open everywhere else. Every fail-open is counted (``costplane_guard_fail_open_total``) and logged at most
once per interval — budgets must never be turned off silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """``default`` mode plus ordered ``(selector, mode)`` rules; the first rule whose selector matches wins."""

    default: Mode = "open"
    rules: Sequence[tuple[Mapping[str, str], Mode]] = field(default_factory=tuple)

    def mode_for(self, scope: Mapping[str, str | None]) -> Mode:
        for selector, mode in self.rules:
            if all(scope.get(k) == v for k, v in selector.items()):
                return mode
        return self.default


class CircuitBreaker:
    """After ``threshold`` consecutive failures, skip Redis for ``cooldown_s``; then let one call probe it."""

    def __init__(
        self, threshold: int = 3, cooldown_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """True when a call may try Redis (closed, or half-open after the cool-down)."""
        if self._failures < self.threshold:  # the common case reads one int and takes no lock
            return True
        with self._lock:
            if self._failures < self.threshold:
                return True
            now = self._clock()
            if now >= self._open_until:
                self._open_until = now + self.cooldown_s  # one probe per cool-down
                return True
            return False

    def success(self) -> None:
        if self._failures:  # the common case reads one int and takes no lock
            with self._lock:
                self._failures = 0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._open_until = self._clock() + self.cooldown_s

    @property
    def open(self) -> bool:
        with self._lock:
            return self._failures >= self.threshold
