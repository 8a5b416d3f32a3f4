"""Checks for the programs the local stack needs, with one readable line per missing one.

A newcomer without Java or Redis should read what to install, for their OS, not a stack trace.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass


class MissingPrerequisite(RuntimeError):
    """A program the dev stack needs is not installed (the message says how to install it)."""


@dataclass(frozen=True, slots=True)
class Prerequisite:
    program: str
    purpose: str
    debian: str
    macos: str

    def missing_line(self) -> str:
        return (
            f"missing prerequisite: `{self.program}` ({self.purpose}). Install it with "
            f"`{self.debian}` on Debian/Ubuntu or `{self.macos}` on macOS."
        )


JAVA = Prerequisite(
    "java",
    "Java 17+ runtime for the Kafka broker",
    "sudo apt-get install -y openjdk-17-jre-headless",
    "brew install openjdk@17",
)
MAVEN = Prerequisite(
    "mvn", "Maven, resolves Apache Kafka from Maven Central", "sudo apt-get install -y maven", "brew install maven"
)
REDIS = Prerequisite("redis-server", "the Redis server", "sudo apt-get install -y redis-server", "brew install redis")


def java_major_version(java: str = "java") -> int | None:
    """Major version of the ``java`` on PATH (``java -version`` prints to stderr), or None if unreadable."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8" style means Java 8


def check_prerequisites(*, need_maven: bool) -> None:
    """Raise MissingPrerequisite naming every missing program (one line each)."""
    problems: list[str] = []
    required = [JAVA, REDIS] + ([MAVEN] if need_maven else [])
    for prereq in required:
        if shutil.which(prereq.program) is None:
            problems.append(prereq.missing_line())
    if shutil.which("java") is not None:
        major = java_major_version()
        if major is not None and major < 17:
            problems.append(f"java {major} found but Kafka needs Java 17 or newer. " + JAVA.missing_line())
    if problems:
        raise MissingPrerequisite("\n".join(problems))
