"""``COSTPLANE_DEV_STATE_DIR`` moves everything a stack writes: before, the chDB directory, the spool and the
worker's data folder stayed under the default state folder, so a second private stack opened the first's chDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from costplane.config import (
    ClickHouseSettings,
    DevStackSettings,
    PublisherSettings,
    WorkerSettings,
    default_state_dir,
    load_settings,
)


def test_one_variable_moves_every_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "COSTPLANE_CLICKHOUSE_CHDB_PATH",
        "COSTPLANE_PUBLISHER_SPOOL_DIR",
        "COSTPLANE_WORKER_DATA_DIR",
        "COSTPLANE_CLICKHOUSE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COSTPLANE_DEV_STATE_DIR", str(tmp_path / "stack-b"))
    state = tmp_path / "stack-b"
    assert default_state_dir() == state
    assert load_settings(DevStackSettings).state_dir == state
    assert load_settings(ClickHouseSettings).chdb_path == state / "clickhouse"
    assert load_settings(PublisherSettings).spool_dir == state / "spool"
    assert load_settings(WorkerSettings).data_dir == state / "worker"


def test_without_it_the_defaults_stay_where_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTPLANE_DEV_STATE_DIR", raising=False)
    monkeypatch.delenv("COSTPLANE_PUBLISHER_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "costplane" / "dev"
    assert load_settings(PublisherSettings).spool_dir == tmp_path / "costplane" / "spool"
