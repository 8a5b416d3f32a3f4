"""Secrets never leave a costplane process in its output: URLs with credentials, tokens and passwords are masked.

Settings hold secrets as ``SecretStr``, but a secret still escapes through text built from it: a Slack webhook URL
in an HTTP client's log line, a ClickHouse URL with its password in an error message, a Schema Registry URL in
``config show``. So every line a costplane command writes passes a :class:`Redactor`:

- every secret value from the settings (``SecretStr`` fields: webhook URLs, routing keys, passwords, tokens) is
  replaced by a mask (a URL keeps its scheme and host, so an operator still sees *where*);
- any URL's password (``scheme://user:password@host``) is masked, and so is the value of a query parameter whose
  name says it is a credential (``token``, ``key``, ``secret``, ``password``, ``sig``, ...).

The CLI installs it on stdout and stderr, on every stdlib log record and as a structlog processor
(``costplane.logging``), so it holds at every log level and for third-party loggers (httpx, httpcore, aiokafka).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<password>[^/\s@]+)@")
_QUERY = re.compile(
    r"(?i)(?P<name>[?&;](?:[\w.-]*(?:token|secret|password|passwd|pwd|sig|signature|api[_-]?key|"
    r"routing[_-]?key|auth|key))=)(?P<value>[^&\s#\"']+)"
)
_URL = re.compile(r"^(?P<base>[A-Za-z][A-Za-z0-9+.-]*://[^/\s?#]+)")
#: Shorter values are not treated as secrets: masking "ab" everywhere would mangle output and protect nothing.
MIN_SECRET_LEN = 6


def mask_url(text: str) -> str:
    """``text`` with every URL's password and every credential-named query value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)


def mask_secret(secret: str) -> str:
    """What a known secret prints as: ``https://host/***`` for a URL (where, not what), else ``***``."""
    match = _URL.match(secret)
    base = match["base"] if match else ""
    if base and "@" in base:  # credentials in the authority: keep the host only
        base = base.split("://", 1)[0] + "://" + base.rsplit("@", 1)[1]
    return f"{base}/{MASK}" if base else MASK


class Redactor:
    """Masks known secrets and credential-looking URL parts in text. Immutable once built."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        # Longest first: a secret that contains another (a URL holding a key) is masked whole.
        self._secrets = tuple(sorted(unique, key=len, reverse=True))
        self._masks = {s: mask_secret(s) for s in self._secrets}
        self._pattern = re.compile("|".join(re.escape(s) for s in self._secrets)) if self._secrets else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self._masks[m.group()], text)
        if "://" in text or "=" in text:
            text = mask_url(text)
        return text

    def value(self, value: Any) -> Any:
        """A log event's value: strings redacted, containers walked, anything else left alone."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, BaseException):
            return self(repr(value))
        return value

    def processor(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """structlog processor: every value of the event redacted (place it after ``format_exc_info``)."""
        for key, value in list(event.items()):
            event[key] = self.value(value)
        return event


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each write before passing it on (stdout / stderr of a costplane command)."""

    def __init__(self, inner: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self._inner = inner
        self._redact = redactor

    def write(self, text: str) -> int:
        self._inner.write(self._redact(text))
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._inner, "encoding", "utf-8"))

    @property
    def inner(self) -> TextIO:
        return self._inner

    def __getattr__(self, name: str) -> Any:  # anything else a caller asks of a text stream (``reconfigure``…)
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _secret_parts(value: str) -> list[str]:
    """What of a secret setting must never be printed.

    An http(s) URL (a webhook) is secret as a whole. Another URL (``redis://``) is a secret for its password only:
    its host and port are what ``dev status`` and error messages must show. Anything else (a key, a token, a
    password) is secret as a whole, and a list in one value (``tenant=token,...``) per item too.
    """
    if value.startswith(("http://", "https://")):
        return [value]
    if _URL.match(value):
        match = _USERINFO.search(value)
        return [match["password"]] if match else []
    return [value, *(p.partition("=")[2] or p for p in value.split(",") if "," in value)]


def settings_secrets() -> list[str]:
    """Every secret the effective settings hold (``SecretStr`` values, also inside lists), plus the password of
    any URL setting. Settings that do not load (a bad variable) contribute nothing: their error is reported on
    its own, and masking still covers URL credentials."""
    from pydantic import SecretStr

    from costplane.config import ConfigError, load_settings, settings_classes

    found: list[str] = []
    for cls in settings_classes():
        try:
            settings = load_settings(cls)
        except (ConfigError, OSError, ValueError):
            continue
        for name in cls.model_fields:
            value = getattr(settings, name)
            for item in value if isinstance(value, list | tuple) else (value,):
                if isinstance(item, SecretStr):
                    found += _secret_parts(item.get_secret_value())
                elif isinstance(item, str) and (m := _USERINFO.search(item)):
                    found.append(m["password"])
        routing_file = getattr(settings, "routing_file", None)
        if routing_file is not None:  # the alert routing file's destinations: webhook URLs and routing keys
            from costplane.streams.alerting.routing import RoutingError, load_routing

            try:
                found += [d.secret for d in load_routing(routing_file).destinations.values()]
            except RoutingError:
                continue
    return found
