"""docker-compose.yml is checked against the code: services, ports and every COSTPLANE_* name must exist."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from costplane.cli.config_cmd import variable_rows

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_ports() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "clickhouse", "migrate", "worker"} <= set(services)
    assert "9092:9092" in services["kafka"]["ports"]
    assert "6379:6379" in services["redis"]["ports"]
    assert "8123:8123" in services["clickhouse"]["ports"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["worker"]["build"] == "." and services["migrate"]["command"] == ["costplane", "db", "migrate"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_costplane_variable_is_a_real_setting() -> None:
    known = {row["variable"] for row in variable_rows()}
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        names = [key for key in env if key.startswith("COSTPLANE_")]
        unknown = sorted(set(names) - known)
        assert unknown == [], f"service {name} sets variables no settings class reads: {unknown}"
    worker_env = _compose()["services"]["worker"]["environment"]
    for required in ("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", "COSTPLANE_REDIS_URL", "COSTPLANE_CLICKHOUSE_URL"):
        assert required in worker_env


def test_image_copies_every_package_folder() -> None:
    """The worker image must contain every folder pyproject maps into the costplane package."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {folder.split("/")[0] for folder in package_dir.values()}
    assert {"costplane", "pricing", "publisher", "enforcers", "streams", "schemas", "sql"} <= folders
    for folder in sorted(folders):
        assert f"COPY {folder} ./{folder}" in dockerfile, f"Dockerfile does not copy {folder}/"
