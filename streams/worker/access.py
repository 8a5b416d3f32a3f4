"""Who may read the worker's ``/api/*`` pages, and what: safe by default.

- A worker that binds its HTTP server beyond loopback must have a token (``COSTPLANE_WORKER_API_TOKEN`` or
  ``COSTPLANE_WORKER_API_TENANT_TOKENS``): :func:`exposure_problem` says why it refuses to start otherwise.
- ``COSTPLANE_WORKER_API_TOKEN`` reads every tenant. A tenant-scoped token (``API_TENANT_TOKENS``:
  ``acme=<token>,globex=<token>``) reads only its tenant: the request's ``tenant`` parameter is set to it, and a
  request naming another tenant is refused (403), so one customer's token never serves another's spend.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from costplane.config import WorkerSettings


@dataclass(frozen=True, slots=True)
class Access:
    """The outcome of a request's credentials: allowed or not, and the one tenant it may read (None: all)."""

    allowed: bool
    tenant: str | None = None
    status: int = 200


DENIED = Access(False, status=401)


def tenant_tokens(worker: WorkerSettings) -> dict[str, str]:
    """``API_TENANT_TOKENS`` as token → tenant (empty when unset). Raises ValueError for a malformed entry."""
    raw = worker.api_tenant_tokens.get_secret_value() if worker.api_tenant_tokens is not None else ""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        tenant, sep, token = part.partition("=")
        if not sep or not tenant.strip() or len(token.strip()) < 16:
            raise ValueError("COSTPLANE_WORKER_API_TENANT_TOKENS entries are tenant=token, tokens of 16+ characters")
        out[token.strip()] = tenant.strip()
    return out


def is_loopback(host: str) -> bool:
    """True for a loopback interface (``localhost``, 127.0.0.0/8, ::1); anything else is reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(worker: WorkerSettings) -> str | None:
    """Why this worker must not start (its API would answer anyone on the network), or None."""
    if is_loopback(worker.web_host) or worker.api_token is not None or worker.api_tenant_tokens is not None:
        return None
    return (
        f"COSTPLANE_WORKER_WEB_HOST={worker.web_host} serves /api/* beyond this machine: set "
        "COSTPLANE_WORKER_API_TOKEN (or COSTPLANE_WORKER_API_TENANT_TOKENS), or bind 127.0.0.1"
    )


def check(header: str | None, worker: WorkerSettings, tokens: dict[str, str]) -> Access:
    """The access a request's ``Authorization`` header grants (constant-time comparisons)."""
    full = worker.api_token.get_secret_value() if worker.api_token is not None else None
    if full is None and not tokens:
        return Access(True)
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return DENIED
    presented = given.strip().encode()
    if full is not None and hmac.compare_digest(presented, full.encode()):
        return Access(True)
    tenant = None
    for token, owner in tokens.items():  # every token compared: the time says nothing about which matched
        if hmac.compare_digest(presented, token.encode()):
            tenant = owner
    return Access(True, tenant) if tenant is not None else DENIED


def scoped_query(query_string: str, tenant: str | None) -> str | None:
    """The query string a tenant-scoped request runs with (its ``tenant`` set), or None when it names another."""
    if tenant is None:
        return query_string
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if any(k == "tenant" and v not in ("", tenant) for k, v in pairs):
        return None
    return urlencode([*(p for p in pairs if p[0] != "tenant"), ("tenant", tenant)])
