"""structlog set-up shared by every costplane process.

JSON lines by default (machines read logs in production); console rendering when stderr is a TTY so
people reading a terminal get colour and alignment. Secrets never reach here: settings hold them as
``SecretStr`` which renders as ``**********``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the stdlib root logger once per process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a named structlog logger (typed as BoundLogger for mypy)."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
