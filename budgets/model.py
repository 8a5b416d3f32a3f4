"""The budget model: what is limited, for whom, over which period, and what happens at the limit."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from costplane.budgets.windows import PERIODS
from costplane.publisher.identifiers import escape, has_control, tenant_problem

Unit = Literal["usd", "tokens"]
DIMENSIONS = ("tenant", "team", "feature", "user", "env", "model", "provider", "plan")
PERIOD_ALIASES = {
    "minute": "rolling-1m",
    "hour": "rolling-1h",
    "rolling-24h": "rolling-24h",
    "calendar-day": "day",
    "calendar-month": "month",
}
NANOS_PER_USD = Decimal(1_000_000_000)
#: The largest limit (nano-USD or tokens) a budget may have: $1,000,000 or 10^15 tokens per window. The guard's
#: scripts sum a counter's buckets and reservations in Lua numbers (IEEE doubles, exact to 2^53 ≈ 9.007e15); this
#: bound leaves room for a window's spend to pass its limit several times over and still be counted exactly.
MAX_LIMIT = 10**15
#: A scope value's length limit: the event contract's (publisher/validation.py).
MAX_SCOPE_VALUE_LEN = 512


class BudgetError(ValueError):
    """A budget definition that cannot be used (the message says which field and why)."""


def parse_scope(text: str) -> dict[str, str]:
    """``tenant=acme,user=*`` → ``{"tenant": "acme", "user": "*"}`` (``*`` = one budget per member)."""
    scope: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise BudgetError(f"scope part {part[:60]!r} must look like dimension=value")
        if name in scope:
            raise BudgetError(f"scope names {name!r} twice; each dimension may appear once")
        scope[name] = value
    return validate_scope(scope)


def validate_scope(scope: Mapping[str, object]) -> dict[str, str]:
    """A scope's dimensions known and each value one the contract accepts (publisher/identifiers.py).

    A value no event can carry (a 10 KB tenant, a control character) would make a budget that never matches, so
    it is refused here rather than accepted silently.
    """
    out: dict[str, str] = {}
    for name, value in scope.items():
        if name not in DIMENSIONS:
            raise BudgetError(f"unknown scope dimension {str(name)[:40]!r}; use {', '.join(DIMENSIONS)}")
        if not isinstance(value, str) or not value:
            raise BudgetError(f"scope {name} must be a non-empty string")
        if value != "*":
            if name == "tenant" and (problem := tenant_problem(value)) is not None:
                raise BudgetError(f"scope {problem}")
            if len(value) > MAX_SCOPE_VALUE_LEN:
                raise BudgetError(f"scope {name} is {len(value)} characters; at most {MAX_SCOPE_VALUE_LEN}")
            if has_control(value):
                raise BudgetError(f"scope {name} holds a control character")
        out[name] = value
    if "tenant" not in out:
        raise BudgetError("a budget scope must name its tenant (tenant=NAME or tenant=*)")
    return out


class Budget(BaseModel):
    """A spend or token limit over a scope and period, with soft thresholds and a hard action.

    ``limit`` is integer nano-USD when ``unit == "usd"`` and tokens when ``unit == "tokens"``. ``action`` is
    ``block``, ``degrade:<model>`` or ``notify``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    scope: dict[str, str]
    period: str = "day"
    tz: str = "UTC"
    unit: Unit = "usd"
    limit: int  # 0 < limit <= MAX_LIMIT (checked with the unit, to name it in the message)
    soft: tuple[float, ...] = ()
    action: str = "block"
    version: int = 0
    updated_at_ms: int = Field(default=0, ge=0)  # when this version was written (epoch ms); 0 = unknown

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_scope(value)

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        value = PERIOD_ALIASES.get(value, value)
        if value not in PERIODS:
            raise BudgetError(f"period {value!r} is not one of {', '.join(PERIODS)}")
        return value

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name longer than a file name may be
            raise BudgetError(f"unknown timezone {value[:60]!r}") from None
        return value

    @field_validator("soft")
    @classmethod
    def _soft(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < v < 1 for v in value):  # NaN fails this too
            raise BudgetError("soft thresholds are fractions between 0 and 1, e.g. 0.5,0.8")
        if len(set(value)) != len(value):
            raise BudgetError("soft thresholds must differ from each other")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _action(self) -> Budget:
        check_limit(self.unit, self.limit)
        if self.action not in ("block", "notify") and not (self.action.startswith("degrade:") and self.action[8:]):
            raise BudgetError(f"action {self.action!r} must be block, notify or degrade:MODEL")
        return self

    # -- constructors -----------------------------------------------------------------------------------------
    @classmethod
    def from_cli(
        cls,
        budget_id: str,
        *,
        scope: str,
        period: str = "day",
        tz: str = "UTC",
        limit_usd: str | None = None,
        limit_tokens: int | None = None,
        soft: str = "",
        action: str = "block",
    ) -> Budget:
        """Build from the ``costplane budget set`` flags (exactly one of limit_usd / limit_tokens)."""
        if (limit_usd is None) == (limit_tokens is None):
            raise BudgetError("give exactly one of --limit-usd or --limit-tokens")
        if limit_usd is not None:
            unit: Unit = "usd"
            limit = usd_to_nanos(limit_usd)
        else:
            unit, limit = "tokens", int(limit_tokens or 0)
        check_limit(unit, limit)
        try:
            thresholds = tuple(float(x) for x in soft.split(",") if x.strip())
        except ValueError:
            raise BudgetError(f"--soft {soft[:60]!r}: thresholds are fractions between 0 and 1, e.g. 0.5,0.8") from None
        return cls(
            id=budget_id,
            scope=parse_scope(scope),
            period=period,
            tz=tz,
            unit=unit,
            limit=limit,
            soft=thresholds,
            action=action,
        )

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> Budget:
        """One entry of a budgets YAML file: the CLI's fields (``scope`` as text or mapping, ``limit_usd`` |
        ``limit_tokens``, ``soft`` as a list or ``"0.5,0.8"``), or an already stored budget (``unit`` + ``limit``)."""
        if not isinstance(item, Mapping):
            raise BudgetError(f"a budget entry must be a mapping, got {type(item).__name__}")
        if "unit" in item and "limit" in item:
            return cls.model_validate(dict(item))
        known = {"id", "scope", "period", "tz", "limit_usd", "limit_tokens", "soft", "action"}
        unknown = sorted(set(item) - known)
        if unknown:
            raise BudgetError(f"unknown budget field(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
        if "id" not in item or "scope" not in item:
            raise BudgetError("a budget entry needs at least id and scope")
        scope = item["scope"]
        if not isinstance(scope, str | Mapping):
            raise BudgetError("scope is text (tenant=acme,user=*) or a mapping")
        scope_text = scope if isinstance(scope, str) else ",".join(f"{k}={v}" for k, v in dict(scope).items())
        soft = item.get("soft", "")
        soft_text = soft if isinstance(soft, str) else ",".join(str(x) for x in soft)
        limit_usd = item.get("limit_usd")
        limit_tokens = item.get("limit_tokens")
        if limit_tokens is not None and (isinstance(limit_tokens, bool) or not isinstance(limit_tokens, int)):
            raise BudgetError(f"limit_tokens must be a whole number, got {str(limit_tokens)[:40]!r}")
        return cls.from_cli(
            str(item["id"]),
            scope=scope_text,
            period=str(item.get("period", "day")),
            tz=str(item.get("tz", "UTC")),
            limit_usd=None if limit_usd is None else str(limit_usd),
            limit_tokens=None if limit_tokens is None else int(limit_tokens),
            soft=soft_text,
            action=str(item.get("action", "block")),
        )

    def identity(self) -> str:
        """Identity of this exact definition (id and version), for caches keyed by budget."""
        return f"{self.id}@{self.version}:{self.limit}:{self.period}:{self.tz}"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Budget:
        return cls.model_validate(json.loads(text))

    # -- matching ---------------------------------------------------------------------------------------------
    @property
    def degrade_model(self) -> str | None:
        return self.action[8:] if self.action.startswith("degrade:") else None

    def member_of(self, attrs: Mapping[str, str | None]) -> str | None:
        """The member key this call/event counts under (e.g. ``tenant=acme,user=u1``), or None if out of scope.

        Values are escaped (publisher/identifiers.py), so distinct members never share a string."""
        parts = []
        for dim in DIMENSIONS:
            wanted = self.scope.get(dim)
            if wanted is None:
                continue
            value = attrs.get(dim)
            if value is None or value == "":
                return None
            if wanted != "*" and value != wanted:
                return None
            parts.append(f"{dim}={escape(value)}")
        return ",".join(parts)

    def event_member(self) -> Callable[[Any], str | None]:
        """:meth:`member_of` for UsageEvent-shaped objects, compiled once: reads the few scoped attributes
        straight off the event instead of building an attribute dict per event (the worker's hot loop)."""
        wanted = [(dim, EVENT_FIELDS[dim], value) for dim in DIMENSIONS if (value := self.scope.get(dim)) is not None]

        def member(event: Any) -> str | None:
            parts = []
            for dim, name, want in wanted:
                value = getattr(event, name)
                if value is None or value == "" or (want != "*" and value != want):
                    return None
                parts.append(f"{dim}={escape(value)}")
            return ",".join(parts)

        return member

    def limit_display(self) -> str:
        if self.unit == "usd":
            return f"${(Decimal(self.limit) / NANOS_PER_USD).normalize()}"
        return f"{self.limit} tokens"


def usd_to_nanos(text: str) -> int:
    """An exact decimal USD amount → integer nano-USD; refuses what is not a finite whole number of nano-USD."""
    try:
        usd = Decimal(str(text).strip())
    except InvalidOperation:
        raise BudgetError(f"--limit-usd {str(text)[:60]!r} is not a number") from None
    if not usd.is_finite():
        raise BudgetError(f"--limit-usd {str(text)[:60]!r} must be a finite number")
    if usd <= 0 or usd * NANOS_PER_USD > MAX_LIMIT:
        raise BudgetError(f"--limit-usd must be more than 0 and at most ${MAX_LIMIT // 10**9:,}")
    nanos = usd * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise BudgetError(f"--limit-usd {str(text)[:60]!r} is finer than a nano-USD (at most 9 decimal places)")
    return int(nanos)


def check_limit(unit: str, limit: int) -> None:
    """Refuse a limit the counters cannot enforce exactly: not > 0, or above :data:`MAX_LIMIT`."""
    if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
        what = f"${MAX_LIMIT // 10**9:,} (10^15 nano-USD)" if unit == "usd" else "10^15 tokens"
        raise BudgetError(f"the limit must be more than 0 and at most {what}; got {str(limit)[:40]}")


def per_user_token_budgets_by_plan(
    tenant: str, limits: Mapping[str, int], *, period: str = "day", tz: str = "UTC", action: str = "block"
) -> list[Budget]:
    """One per-user token budget per plan: e.g. ``{"free": 10_000, "pro": 200_000}`` tokens a day each user."""
    return [
        Budget(
            id=f"{tenant}-user-tokens-{plan}",
            scope={"tenant": tenant, "user": "*", "plan": plan},
            period=period,
            tz=tz,
            unit="tokens",
            limit=limit,
            action=action,
        )
        for plan, limit in limits.items()
    ]


def budgets_from_yaml(text: str) -> list[Budget]:
    """Every budget of a YAML document holding a list of entries (see :meth:`Budget.from_mapping`).

    All entries are validated before any is returned, and an error names the entry (index and id) that failed, so
    ``budget apply`` can refuse a file as a whole.
    """
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BudgetError(f"not valid YAML: {exc}") from None
    if isinstance(data, Mapping) and "budgets" in data:
        data = data["budgets"]
    if not isinstance(data, list):
        raise BudgetError("a budgets file holds a list of budgets (or a mapping with a 'budgets' list)")
    out: list[Budget] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        label = f"entry {index}" + (f" ({item.get('id')})" if isinstance(item, Mapping) and "id" in item else "")
        try:
            budget = Budget.from_mapping(item)
        except (BudgetError, ValidationError, TypeError, ValueError) as exc:
            raise BudgetError(f"{label}: {exc}") from None
        if budget.id in seen:
            raise BudgetError(f"{label}: duplicate budget id {budget.id!r}")
        seen.add(budget.id)
        out.append(budget)
    return out


#: Scope dimension → UsageEvent attribute.
EVENT_FIELDS = {
    "tenant": "tenant",
    "team": "team",
    "feature": "feature",
    "user": "user_id",
    "env": "env",
    "model": "model",
    "provider": "provider",
    "plan": "plan",
}


def event_attrs(event: Any) -> dict[str, str | None]:
    """Scope attributes of a UsageEvent-shaped object (``user`` is the event's ``user_id``)."""
    return {
        "tenant": event.tenant,
        "team": event.team,
        "feature": event.feature,
        "user": event.user_id,
        "env": event.env,
        "model": event.model,
        "provider": event.provider,
        "plan": event.plan,
    }
