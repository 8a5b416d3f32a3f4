"""The identifiers every key and member name is built from: what the contract accepts, and how they are encoded.

A tenant names a Redis hash tag (``{acme}``) and a budget member (``tenant=acme,user=u-17``) names a Redis key and
the worker's window state. Raw strings there let one tenant's name or one user's id reach into another's keys: a
``}`` moves a key to another tenant's cluster slot, a ``,`` or ``=`` in a user id makes two members one string. So:

- a **tenant** is 1–128 characters of ``A-Z a-z 0-9 . _ - : @ + /`` (checked at the contract: the publisher, the
  worker's decoder, budget scopes). None of them is special in a key, a hash tag or a member string.
- a **dimension value** (team, feature, user, env, plan, model, provider) is any text without control characters
  (code points below 32 and 127) within the contract's length limit, and is *escaped* where it joins a member
  string: ``%``, ``,``, ``=``, ``|``, ``{`` and ``}`` become ``%25 %2C %3D %7C %7B %7D``. Escaping is injective and
  leaves every other character alone, so no two distinct (dimension, value) lists give one member string, and a
  member of plain values reads as before.

Keys use :func:`tenant_tag`, which is the tenant itself for every valid tenant and an escaped form (never a valid
tenant) for anything else, so even a tenant the contract would refuse cannot reach another tenant's keys.
"""

from __future__ import annotations

import re

TENANT_MAX_LEN = 128
TENANT_CHARS = "A-Z a-z 0-9 . _ - : @ + /"
_TENANT = re.compile(r"[A-Za-z0-9._:@+/-]{1,128}").fullmatch
_NOT_TENANT = re.compile(r"[^A-Za-z0-9._:@+/-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]").search
_SPECIAL = re.compile(r"[%,=|{}]")
_ESCAPES = {c: f"%{ord(c):02X}" for c in "%,=|{}"}
_UNESCAPE = re.compile(r"%(25|2C|3D|7C|7B|7D)")


def tenant_problem(value: object) -> str | None:
    """Why ``value`` cannot be a tenant id, or None when it can."""
    if not isinstance(value, str) or not value:
        return "a tenant is a non-empty string"
    if _TENANT(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"tenant {shown!r} ({len(value)} characters) must be 1-{TENANT_MAX_LEN} characters of {TENANT_CHARS}"
    return None


def is_tenant(value: str) -> bool:
    """True when ``value`` is a valid tenant id (the hot-path form of :func:`tenant_problem`)."""
    return _TENANT(value) is not None


def tenant_tag(tenant: str) -> str:
    """The tenant as it appears inside a key's hash tag: itself when valid; otherwise every character outside
    the tenant charset as ``%XX`` of its UTF-8 bytes. ``%`` is not in the charset, so an encoded name never equals
    a valid one, and no name can carry ``{``, ``}`` or a control character into a key.

    The contract refuses such tenants; this is the guard's defence when an app passes one in a call scope.
    """
    if _TENANT(tenant) is not None:
        return tenant
    return (
        _NOT_TENANT.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), tenant)
        or "%"
    )


def has_control(value: str) -> bool:
    """True when ``value`` holds a control character (never valid in a dimension value)."""
    return _CONTROL(value) is not None


def escape(value: str) -> str:
    """``value`` as it appears in a member string (see the module docstring); identity for plain values."""
    if _SPECIAL.search(value) is None:
        return value
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], value)


def unescape(value: str) -> str:
    """The inverse of :func:`escape`."""
    if "%" not in value:
        return value
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
