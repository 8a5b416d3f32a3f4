"""structlog set-up shared by every costplane process.

JSON lines by default (machines read logs in production); console rendering when stderr is a TTY so
people reading a terminal get colour and alignment. Settings hold secrets as ``SecretStr`` (``**********``), and
with a :class:`~costplane.redact.Redactor` every event and every stdlib record — httpx's and httpcore's
included, at any level — is redacted before it is written (secrets built into URLs and messages).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Literal

import structlog

from costplane.redact import Redactor

LogFormat = Literal["auto", "json", "console"]


def redacting_record_factory(
    redactor: Redactor, base: Callable[..., logging.LogRecord] | None = None
) -> Callable[..., logging.LogRecord]:
    """A LogRecord factory whose records carry their message (and traceback) already redacted.

    At record creation rather than in a handler: libraries and the stream framework install handlers of their
    own, and every one of them formats the same record.
    """
    make = base or logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a library's bad format string: keep its parts, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redactor(message), ()  # () not None: some handlers wrap args in a tuple
        if record.exc_info and not record.exc_text:
            record.exc_text = redactor(logging.Formatter().formatException(record.exc_info))
        return record

    return factory


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto", redactor: Redactor | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process (redacting when given a redactor)."""
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
        *([redactor.processor] if redactor is not None else []),
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
    if redactor is not None:
        logging.setLogRecordFactory(redacting_record_factory(redactor))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a named structlog logger (typed as BoundLogger for mypy)."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
