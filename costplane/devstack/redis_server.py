"""redis-server for the dev stack, with AOF so decisions and counters survive ``down`` + ``up``."""

from __future__ import annotations

from costplane.config import DevStackSettings
from costplane.devstack.process import ManagedProcess


class RedisServer:
    """The dev stack's redis-server on 127.0.0.1."""

    def __init__(self, settings: DevStackSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "redis"
        self.process = ManagedProcess(
            "redis", settings.state_dir / "pids", settings.state_dir / "logs" / "redis.log", marker=str(self.home)
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.settings.redis_port}/0"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        # The marker (home path) is in argv via the config path, so pid checks can tell this server apart.
        conf.write_text(
            "bind 127.0.0.1\n"
            f"port {self.settings.redis_port}\n"
            f"dir {self.home}\n"
            "appendonly yes\n"
            "appendfsync everysec\n"
            "save 60 1\n"
            "daemonize no\n"
            "protected-mode yes\n"
            "maxmemory-policy noeviction\n"
            "set-proc-title no\n"
        )
        self.process.start(["redis-server", str(conf)], cwd=self.home)

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)

    def healthy(self, timeout_s: float = 2.0) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
