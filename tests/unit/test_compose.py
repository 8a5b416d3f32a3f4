"""docker-compose.yml is checked against the Compose Specification's schema and against the code: services,
ports, listeners, and every COSTPLANE_* name must exist."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from costplane.cli.config_cmd import variable_rows
from costplane.streams.worker.access import is_loopback

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


def test_the_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(_compose()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_kafka_advertises_a_listener_for_containers_and_one_for_the_host() -> None:
    services = _compose()["services"]
    env = services["kafka"]["environment"]
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["INTERNAL"] == services["worker"]["environment"]["COSTPLANE_KAFKA_BOOTSTRAP_SERVERS"]
    host_port = advertised["EXTERNAL"].rsplit(":", 1)[1]
    assert advertised["EXTERNAL"].startswith("localhost:") and f"{host_port}:{host_port}" in services["kafka"]["ports"]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"


def test_the_worker_listens_on_all_interfaces_only_with_a_token_and_has_healthchecks() -> None:
    services = _compose()["services"]
    worker = services["worker"]["environment"]
    assert not is_loopback(worker["COSTPLANE_WORKER_WEB_HOST"])
    assert worker["COSTPLANE_WORKER_API_TOKEN"].startswith("${COSTPLANE_WORKER_API_TOKEN:?")  # compose refuses unset
    for name in ("kafka", "redis", "clickhouse", "worker"):
        assert services[name]["healthcheck"]["test"], name
