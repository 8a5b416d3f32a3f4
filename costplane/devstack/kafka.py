"""Apache Kafka, single node, KRaft mode, run from the official artifacts on Maven Central.

No Docker and no tarball download: Maven resolves ``org.apache.kafka:kafka_2.13`` and its runtime dependencies
once into the user's cache directory; the broker runs as ``java -cp <jars> kafka.Kafka server.properties``.
Storage is formatted once (``kafka.tools.StorageTool``) and kept, so data survives ``down`` + ``up``.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from importlib import resources

from costplane.config import DevStackSettings
from costplane.devstack.process import ManagedProcess

HEALTH_TOPIC = "__costplane_health"


class KafkaSetupError(RuntimeError):
    """Resolving, formatting or starting the broker failed (message carries the tool's output)."""


class KafkaBroker:
    """The dev stack's Kafka broker: resolve jars, format storage, start, health-check, stop."""

    def __init__(self, settings: DevStackSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.config_file = self.home / "server.properties"
        self.log4j_file = self.home / "log4j.properties"
        self.jar_dir = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
        self.process = ManagedProcess(
            "kafka", settings.state_dir / "pids", settings.state_dir / "logs" / "kafka.log", marker=str(self.home)
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    # -- artifacts -------------------------------------------------------------------------------------------
    def jars_ready(self) -> bool:
        return (self.jar_dir.parent / ".complete").exists()

    def resolve_jars(self) -> None:
        """Resolve the broker's jars with Maven into the cache directory (once per version)."""
        if self.jars_ready():
            return
        work = self.jar_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        template = resources.files("costplane.devstack").joinpath("templates/kafka-pom.xml").read_text()
        (work / "pom.xml").write_text(template.replace("@KAFKA_VERSION@", self.settings.kafka_version))
        cmd = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.jar_dir}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0 or not any(self.jar_dir.glob("kafka_2.13-*.jar")):
            raise KafkaSetupError(
                f"Maven could not resolve Apache Kafka {self.settings.kafka_version}:\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        (work / ".complete").write_text(self.settings.kafka_version + "\n")

    # -- configuration and storage ---------------------------------------------------------------------------
    def write_config(self) -> None:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(s.kafka_partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            "message.max.bytes": "10485760",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log_file = s.state_dir / "logs" / "kafka-server.log"
        self.log4j_file.write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={log_file}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=3\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
        )

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.log4j_file}",
            f"-Dcostplane.home={self.home}",
            "-cp",
            f"{self.jar_dir}/*",
            main,
            *args,
        ]

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format_storage(self) -> None:
        """Format KRaft storage once; an existing cluster keeps its id and data."""
        if self.formatted():
            return
        cluster_id = self._random_cluster_id()
        cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file))
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise KafkaSetupError("formatting Kafka storage failed:\n" + (result.stdout + result.stderr)[-3000:])

    def _random_cluster_id(self) -> str:
        result = subprocess.run(  # noqa: S603
            self._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True, check=False
        )
        lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
        if result.returncode != 0 or not lines:
            raise KafkaSetupError("could not create a cluster id:\n" + result.stderr[-2000:])
        return lines[-1]

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.resolve_jars()
        self.write_config()
        self.format_storage()
        self.process.start(
            self._java("kafka.Kafka", str(self.config_file), heap=self.settings.kafka_heap), cwd=self.home
        )

    def stop(self) -> bool:
        return self.process.stop(timeout_s=60.0)

    def healthy(self, timeout_s: float = 5.0) -> bool:
        """A real produce → consume round trip of a unique message."""
        try:
            return self._round_trip(timeout_s)
        except Exception:  # noqa: BLE001 - any client failure means "not healthy"; status must not raise
            return False

    def _round_trip(self, timeout_s: float) -> bool:
        from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

        token = uuid.uuid4().hex.encode()
        delivered: list[tuple[int, int]] = []

        def on_delivery(err: KafkaError | None, msg: object) -> None:
            if err is None:
                delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

        quiet = {"log_level": 0, "logger": _silent_logger()}
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "message.timeout.ms": int(timeout_s * 1000),
                "socket.connection.setup.timeout.ms": 2000,
                **quiet,
            }
        )
        producer.produce(HEALTH_TOPIC, value=token, partition=0, on_delivery=on_delivery)
        producer.flush(timeout_s)
        if not delivered:
            return False
        partition, offset = delivered[0]
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"costplane-health-{token.decode()}",
                "enable.auto.commit": False,
                **quiet,
            }
        )
        try:
            consumer.assign([TopicPartition(HEALTH_TOPIC, partition, offset)])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None and msg.value() == token:
                    return True
            return False
        finally:
            consumer.close()


def _silent_logger() -> object:
    """A logger for librdkafka that drops its connection-refused chatter during health probes."""
    import logging

    logger = logging.getLogger("costplane.devstack.kafka.probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
