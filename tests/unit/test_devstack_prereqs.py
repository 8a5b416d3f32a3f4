"""A missing prerequisite is one readable line per program (with install hints), never a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from costplane.devstack.prereqs import MissingPrerequisite, check_prerequisites, java_major_version


def _path_with_only(tmp_path: Path, *programs: str) -> str:
    """A PATH holding just the python interpreter and stub programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for program in programs:
        stub = bin_dir / program
        stub.write_text("#!/bin/sh\necho 'openjdk version \"17.0.9\"' >&2\n")
        stub.chmod(0o755)
    return str(bin_dir)


def test_every_missing_program_is_named_with_debian_and_macos_hints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_with_only(tmp_path))
    with pytest.raises(MissingPrerequisite) as info:
        check_prerequisites(need_maven=True)
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    for program, debian, mac in (
        ("java", "openjdk-17-jre-headless", "openjdk@17"),
        ("mvn", "maven", "maven"),
        ("redis-server", "redis-server", "redis"),
    ):
        line = next(ln for ln in lines if f"`{program}`" in ln)
        assert f"apt-get install -y {debian}" in line and f"brew install {mac}" in line


def test_maven_is_only_needed_before_the_jars_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_with_only(tmp_path, "java", "redis-server"))
    check_prerequisites(need_maven=False)
    with pytest.raises(MissingPrerequisite, match="`mvn`"):
        check_prerequisites(need_maven=True)


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _path_with_only(tmp_path, "redis-server", "mvn")
    java = Path(path) / "java"
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_292\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", path)
    assert java_major_version() == 8
    with pytest.raises(MissingPrerequisite, match="java 8 found but Kafka needs Java 17"):
        check_prerequisites(need_maven=True)


def test_cli_prints_one_line_per_missing_program_and_no_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": _path_with_only(tmp_path),
        "COSTPLANE_DEV_STATE_DIR": str(tmp_path / "s"),
        "COSTPLANE_DEV_CACHE_DIR": str(tmp_path / "c"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "dev", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3
    assert "Traceback" not in out.stderr + out.stdout
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("missing prerequisite")].__len__() == 3
