"""Settings: COSTPLANE_* env, readable validation errors, secrets never rendered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costplane.config import (
    ClickHouseSettings,
    ConfigError,
    KafkaSettings,
    RedisSettings,
    load_settings,
)


def test_env_prefix_and_topic_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("COSTPLANE_KAFKA_TOPIC_PREFIX", "acme-cp")
    settings = load_settings(KafkaSettings)
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic("usage.dlq") == "acme-cp.usage.dlq"


def test_validation_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ConfigError) as info:
        load_settings(KafkaSettings)
    assert "COSTPLANE_KAFKA_SECURITY_PROTOCOL" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_sasl_and_tls_pass_through_and_secrets_are_not_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("COSTPLANE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("COSTPLANE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("COSTPLANE_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("COSTPLANE_KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    settings = load_settings(KafkaSettings)
    conf = settings.confluent_config()
    assert conf["sasl.password"] == "hunter2-secret"
    assert conf["security.protocol"] == "SASL_SSL" and conf["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings)
    monkeypatch.setenv("COSTPLANE_REDIS_URL", "redis://:topsecret@redis:6379/0")
    assert "topsecret" not in repr(load_settings(RedisSettings))


def test_stack_endpoints_file_fills_defaults_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_DEV_STATE_DIR", str(tmp_path))
    (tmp_path / "endpoints.json").write_text(
        json.dumps(
            {
                "kafka": {"bootstrap": "127.0.0.1:29092"},
                "redis": {"url": "redis://127.0.0.1:26379/0"},
                "clickhouse": {"chdb_path": str(tmp_path / "ch")},
            }
        )
    )
    monkeypatch.delenv("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert load_settings(KafkaSettings).bootstrap_servers == "127.0.0.1:29092"
    assert load_settings(RedisSettings).url.get_secret_value() == "redis://127.0.0.1:26379/0"
    assert load_settings(ClickHouseSettings).chdb_path == tmp_path / "ch"
    monkeypatch.setenv("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", "prod:9092")
    assert load_settings(KafkaSettings).bootstrap_servers == "prod:9092"


def test_clickhouse_dsn_never_carries_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_URL", "https://analyst@ch.internal:8443")
    monkeypatch.setenv("COSTPLANE_CLICKHOUSE_PASSWORD", "s3cr3t")
    settings = load_settings(ClickHouseSettings)
    assert settings.dsn == "https://analyst@ch.internal:8443" and "s3cr3t" not in repr(settings)
