"""Identifiers that cannot collide: property-based over adversarial tenants, budget ids and dimension values.

Before: keys and members were raw strings. A tenant ``A5c}:decision:blkU5:tenant=A5c,user=u`` made its worker
meta key equal to another tenant's decision key; (team=``a,user=b``, user=``X``) and (team=``a``,
user=``b,user=X``) were one member; a ``}`` in a tenant moved its keys to another tenant's cluster slot.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costplane.budgets import Budget
from costplane.budgets.model import DIMENSIONS
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.publisher.identifiers import escape, is_tenant, tenant_tag, unescape
from costplane.publisher.testing import usage_event
from costplane.publisher.validation import InvalidEvent, validate_event
from costplane.streams.core.spend import tenant_of
from costplane.streams.worker.windowstore import WindowKeys

pytestmark = pytest.mark.chaos  # adversarial names: part of the fuzz and security suites

#: Text made of the characters that separate things in keys and members, plus a few ordinary ones.
HOSTILE = st.text(alphabet=st.sampled_from(list("{}:,=|%*aAb1-_.@/ \x00\x7fé")), min_size=1, max_size=12)
ANY_TEXT = st.one_of(HOSTILE, st.text(min_size=1, max_size=12))
BUDGET_IDS = st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True)


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: between the first ``{`` and the next ``}`` (CLUSTER KEYSLOT)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start != -1 and end > start + 1 else key


def wildcard(dims: tuple[str, ...]) -> Budget:
    return Budget.model_validate({"id": "b", "scope": dict.fromkeys(dims, "*"), "unit": "tokens", "limit": 1})


@given(st.text(max_size=20))
def test_escape_round_trips_and_leaves_no_separator(value: str) -> None:
    escaped = escape(value)
    assert unescape(escaped) == value
    assert not set(escaped) & set(",=|{}")


@settings(max_examples=300)
@given(st.lists(st.sampled_from(DIMENSIONS[1:]), min_size=1, max_size=4, unique=True).map(tuple), st.data())
def test_distinct_members_never_share_a_string(dims: tuple[str, ...], data: st.DataObject) -> None:
    budget = wildcard(("tenant", *dims))
    a = {"tenant": "acme", **{d: data.draw(ANY_TEXT) for d in dims}}
    b = {"tenant": "acme", **{d: data.draw(ANY_TEXT) for d in dims}}
    ma, mb = budget.member_of(a), budget.member_of(b)
    assert ma is not None and mb is not None
    assert (ma == mb) == (a == b)


def test_the_reported_member_collision() -> None:
    budget = wildcard(("tenant", "team", "user"))
    one = budget.member_of({"tenant": "acme", "team": "a,user=b", "user": "X"})
    two = budget.member_of({"tenant": "acme", "team": "a", "user": "b,user=X"})
    assert one != two


@given(ANY_TEXT, ANY_TEXT)
def test_tenant_tags_are_injective_and_hold_no_braces(a: str, b: str) -> None:
    ta, tb = tenant_tag(a), tenant_tag(b)
    assert (ta == tb) == (a == b)
    assert "{" not in ta and "}" not in ta and is_tenant(ta) == is_tenant(a)
    if is_tenant(a):
        assert ta == a


@settings(max_examples=300)
@given(
    st.tuples(ANY_TEXT, BUDGET_IDS, st.lists(ANY_TEXT, min_size=1, max_size=2)),
    st.tuples(ANY_TEXT, BUDGET_IDS, st.lists(ANY_TEXT, min_size=1, max_size=2)),
)
def test_distinct_tuples_never_share_a_key_and_keys_stay_in_their_tenants_slot(
    one: tuple[str, str, list[str]], two: tuple[str, str, list[str]]
) -> None:
    keys, win = KeyLayout("cp"), WindowKeys("cp", "g")
    made = []
    for tenant, budget_id, values in (one, two):
        member = wildcard(("tenant", "team", "user")[: len(values) + 1]).member_of(
            {"tenant": tenant, "team": values[0], "user": values[-1]}
        )
        assert member is not None
        state_key = f"{budget_id}|{member}"
        named = {
            "decision": keys.decision(tenant, budget_id, member),
            "spent": keys.spent(tenant, budget_id, member),
            "budgets": keys.budgets(tenant),
            "meta": win.meta(tenant),
            "win": win.tenant_window(tenant, state_key),
        }
        assert win.window(state_key) == named["win"]  # the tenant read back from the member is the same tenant
        assert tenant_of(member) == tenant
        for key in named.values():
            assert hash_tag(key) == tenant_tag(tenant)
        assert len(set(named.values())) == len(named)
        made.append(((tenant, budget_id, member), named))
    (tuple_a, keys_a), (tuple_b, keys_b) = made
    for kind_a, key_a in keys_a.items():
        for kind_b, key_b in keys_b.items():
            same_thing = kind_a == kind_b and (
                tuple_a == tuple_b or (kind_a in ("budgets", "meta") and tuple_a[0] == tuple_b[0])
            )
            assert (key_a == key_b) == same_thing, (kind_a, kind_b, key_a)


def test_the_reported_key_collision() -> None:
    keys, win = KeyLayout("cp"), WindowKeys("cp", "g")
    hostile = "A5c}:decision:blkU5:tenant=A5c,user=u"
    member = wildcard(("tenant", "user")).member_of({"tenant": "A5c", "user": "u}:worker:g"})
    assert member is not None
    assert win.meta(hostile) != keys.decision("A5c", "blkU5", member)
    assert hash_tag(win.meta(hostile)) != "A5c"


def _event(**fields: object) -> UsageEvent:
    return usage_event(**{"occurred_at": 1_700_000_000_000, "request_id": "r", **fields})


@given(ANY_TEXT)
def test_the_contract_accepts_exactly_the_documented_tenants(tenant: str) -> None:
    try:
        validate_event(_event(tenant=tenant))
    except InvalidEvent as exc:
        assert not is_tenant(tenant) and exc.reason in ("bad_tenant", "not_utf8")
    else:
        assert is_tenant(tenant)


@given(
    st.sampled_from(["user_id", "team", "feature", "env", "plan", "model", "provider"]),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=1, max_size=10),
)
def test_dimension_values_refuse_control_characters(name: str, value: str) -> None:
    has_control = any(ord(c) < 32 or ord(c) == 127 for c in value)
    try:
        validate_event(_event(**{name: value}))
    except InvalidEvent as exc:
        assert has_control and exc.reason == "control_character" and exc.field == name
    else:
        assert not has_control
