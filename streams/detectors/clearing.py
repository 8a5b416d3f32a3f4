"""Reporting levels so the alert lifecycle can edge-trigger on evidence: every finding that holds is reported
active each judged minute; a key that was active is then reported inactive for ``clear_report_minutes`` minutes
(the detector's own inactive finding when it built one, else the last active one marked cleared) and forgotten."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from costplane.streams.core.findings import Finding
from costplane.streams.detectors.base import MINUTE_MS, dedup_key
from costplane.streams.detectors.config import DetectorConfig


class Clearing:
    """The keys active recently: dedup key -> (last active finding, its minute)."""

    def __init__(self) -> None:
        self.recent: dict[str, tuple[Finding, int]] = {}
        self._cleared: set[str] = set()  # recent keys already reported inactive at least once

    def was_active(self, kind: str, tenant: str, labels: Mapping[str, str]) -> bool:
        return dedup_key(kind, tenant, labels) in self.recent

    def report(self, current: list[Finding], minute: int, config_for: Callable[[str], DetectorConfig]) -> list[Finding]:
        """Active findings, plus inactive ones for keys active in the last ``clear_report_minutes``.

        A key that was active is reported inactive at least once (even after a long gap) and then until
        ``clear_report_minutes`` have passed since it was last active; then it is forgotten.
        """
        out: list[Finding] = []
        inactive: dict[str, Finding] = {}
        for f in current:
            if f.active:
                self.recent[f.dedup_key] = (f, minute)
                self._cleared.discard(f.dedup_key)
                out.append(f)
            elif f.dedup_key in self.recent:
                inactive[f.dedup_key] = f
        for key, (last, at) in list(self.recent.items()):
            if at == minute:
                continue
            if at < minute - config_for(last.tenant).clear_report_minutes * MINUTE_MS and key in self._cleared:
                del self.recent[key]
                self._cleared.discard(key)
                continue
            self._cleared.add(key)
            out.append(
                inactive.get(key)
                or replace(
                    last,
                    active=False,
                    window_start_ms=minute,
                    window_end_ms=minute + MINUTE_MS,
                    summary=f"cleared: {last.summary}",
                )
            )
        return out

    def forget(self, tenant: str) -> None:
        for key in [k for k, (f, _) in self.recent.items() if f.tenant == tenant]:
            del self.recent[key]
            self._cleared.discard(key)
