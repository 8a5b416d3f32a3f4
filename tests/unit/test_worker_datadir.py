"""The worker's local files go to its configured data directory, never into the directory it was started from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings
from costplane.streams.app import create_app
from costplane.streams.worker.metrics import WorkerMetrics


def test_faust_data_folder_is_under_the_configured_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started_in = tmp_path / "cwd"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="dd")
    worker = WorkerSettings(role="sink", data_dir=tmp_path / "state", group_id="grp{x}")
    app = create_app(kafka, RedisSettings(url="redis://127.0.0.1:1/0"), worker, None, WorkerMetrics())
    # A sink-only process's Faust app has an id of its own (it stays out of the stream role's group); braces in a
    # group id are kept as they are.
    assert Path(app.conf.datadir) == tmp_path / "state" / "grp{x}.sink.web"
    app._create_directories()  # what Faust does as the worker starts: only the last level is created there
    assert Path(app.conf.tabledir).is_dir() and Path(app.conf.tabledir).is_relative_to(tmp_path / "state")
    assert os.listdir(started_in) == []


def test_default_data_dir_is_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("COSTPLANE_WORKER_DATA_DIR", raising=False)
    monkeypatch.delenv("COSTPLANE_DEV_STATE_DIR", raising=False)  # CI sets it: it moves everything a stack writes
    assert WorkerSettings().data_dir.is_relative_to(tmp_path)
