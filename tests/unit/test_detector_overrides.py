"""Per-tenant detector thresholds: parsing and validating a record, layering the default and the tenants, planning
`set`/`reset`/`apply`, and the worker's reading of the detectors topic (each refusal a one-line reason)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml

from costplane.streams.detectors import DetectorConfig, Detectors
from costplane.streams.detectors.config import parse_overrides
from costplane.streams.detectors.overrides import (
    assignments,
    decode_record,
    encode_record,
    parse_record,
    plan_apply,
    plan_reset,
    plan_set,
    resolve,
)
from costplane.streams.worker.detector_settings import DetectorSettings


def test_values_take_the_type_of_their_default() -> None:
    parsed = parse_overrides(
        {"retry_ratio": "0.2", "min_retries": "5", "spike_floor_nanos": 1_000, "dimensions": "feature,user"}
    )
    assert parsed == {
        "retry_ratio": Decimal("0.2"),
        "min_retries": 5,
        "spike_floor_nanos": 1_000,
        "dimensions": ("feature", "user"),
    }
    assert parse_overrides({"min_attempts": "1_000", "user_share": 0.5}) == {
        "min_attempts": 1000,
        "user_share": Decimal("0.5"),
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"colour": "red"}, "unknown detector setting 'colour'"),
        ({"retry_ratio": "abc"}, "retry_ratio must be a decimal number"),
        ({"retry_ratio": "NaN"}, "finite"),
        ({"retry_ratio": True}, "decimal number"),
        ({"min_retries": "2.5"}, "min_retries must be a whole number"),
        ({"min_retries": 2.5}, "whole number"),
        ({"min_retries": "Infinity"}, "whole number"),
        ({"min_retries": False}, "whole number"),
        ({"min_retries": [1]}, "whole number"),
        ({"dimensions": ["feature", "colour"]}, "colour not a usage event field"),
        ({"dimensions": 5}, "list of event field names"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_overrides(values)
    assert "\n" not in str(err.value)


def test_a_combination_the_detectors_cannot_run_is_refused_as_a_whole() -> None:
    with pytest.raises(ValueError, match="contributors_tracked must be >= top_contributors"):
        DetectorConfig.from_mapping({"top_contributors": 300})
    with pytest.raises(ValueError, match="ewma_alpha"):
        DetectorConfig.from_mapping({"ewma_alpha": "0"})
    with pytest.raises(ValueError, match="cache_min_prompt_tokens"):
        DetectorConfig.from_mapping({"cache_min_prompt_tokens": 0})  # a hit rate of no prompt tokens


def test_the_clock_setting_is_worker_wide() -> None:
    with pytest.raises(ValueError, match="grace_ms applies to the whole worker"):
        parse_record("acme", {"grace_ms": 1_000})
    assert parse_record("*", {"grace_ms": 1_000}) == {"grace_ms": 1_000}


def test_a_record_key_is_a_tenant_id_or_the_default() -> None:
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        parse_record("a b", {})
    with pytest.raises(ValueError, match="non-empty"):
        parse_record("", {})


def test_records_round_trip_through_the_topic_encoding() -> None:
    record = parse_record("acme", {"retry_ratio": "0.25", "dimensions": ["feature"], "min_retries": 3})
    raw = encode_record(record)
    assert json.loads(raw) == {"dimensions": ["feature"], "min_retries": 3, "retry_ratio": "0.25"}
    assert decode_record("acme", raw) == record
    for bad, message in [(b"{", "not JSON"), (b"[1]", "not a JSON object"), (b'{"x": 1}', "unknown")]:
        with pytest.raises(ValueError, match=message):
            decode_record("acme", bad)


def test_a_tenant_layers_on_the_default_which_layers_on_the_built_in_numbers() -> None:
    resolved = resolve({"*": {"min_retries": 3}, "acme": {"retry_ratio": Decimal("0.5")}})
    assert resolved.default == DetectorConfig(min_retries=3)
    assert resolved.tenants == {"acme": DetectorConfig(min_retries=3, retry_ratio=Decimal("0.5"))}
    assert resolved.errors == {}


def test_a_record_that_does_not_combine_is_not_applied_and_says_why() -> None:
    # The default lowers contributors_tracked under what acme reports: acme keeps the default, named in errors.
    resolved = resolve({"*": {"contributors_tracked": 10}, "acme": {"top_contributors": 20}, "globex": {}})
    assert resolved.default.contributors_tracked == 10
    assert "acme" not in resolved.tenants and resolved.tenants["globex"] == resolved.default
    assert resolved.errors == {"acme": "contributors_tracked must be >= top_contributors"}
    bad_default = resolve({"*": {"top_contributors": 500}})
    assert bad_default.default == DetectorConfig() and "*" in bad_default.errors


def test_set_merges_into_the_tenants_record_and_reset_removes_it() -> None:
    current = {"acme": {"min_retries": 3}}
    change = plan_set(current, "acme", assignments(["retry_ratio=0.5"]))
    assert change.after == {"min_retries": 3, "retry_ratio": Decimal("0.5")}
    assert change.lines() == ["retry_ratio: - → 0.5"]
    reset = plan_reset(current, "acme")
    assert reset.after is None and reset.lines() == ["min_retries: 3 → -"]
    with pytest.raises(ValueError, match="no thresholds are set for 'globex'"):
        plan_reset(current, "globex")
    with pytest.raises(ValueError, match="expected key=value, got 'retry_ratio'"):
        assignments(["retry_ratio"])


def test_a_new_default_that_would_break_a_tenant_is_refused_but_an_old_break_blocks_nothing() -> None:
    with pytest.raises(ValueError, match="tenant acme: contributors_tracked must be >= top_contributors"):
        plan_set({"acme": {"top_contributors": 50}}, "*", {"contributors_tracked": 10})
    broken = {"*": {"contributors_tracked": 10}, "acme": {"top_contributors": 50}}  # written by hand
    assert plan_set(broken, "globex", {"min_retries": 2}).after == {"min_retries": 2}


APPLY = """
default:
  spike_factor: "2.5"
tenants:
  acme: {retry_ratio: 0.5}
  globex: {min_attempts: 50, dimensions: [feature]}
"""


def test_apply_replaces_the_named_records_keeps_the_others_and_lists_only_differences() -> None:
    current = {"acme": {"retry_ratio": Decimal("0.5"), "min_retries": 2}, "initech": {"min_retries": 1}}
    changes = {c.key: c for c in plan_apply(current, yaml.safe_load(APPLY))}
    assert set(changes) == {"*", "acme", "globex"}  # initech is not named: kept as it is, not a change
    assert changes["*"].lines() == ["spike_factor: - → 2.5"]
    assert changes["acme"].lines() == ["min_retries: 2 → -"]  # the file's record replaces the stored one
    assert changes["globex"].after == {"min_attempts": 50, "dimensions": ("feature",)}
    same = {"*": {"spike_factor": Decimal("2.5")}, "acme": {"retry_ratio": Decimal("0.5")}}
    assert [
        c.key for c in plan_apply(same, {"default": {"spike_factor": "2.5"}, "tenants": {"acme": same["acme"]}})
    ] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1", "expected a mapping"),
        ("defaults: {}", "unknown top-level key 'defaults'"),
        ("tenants: [acme]", "tenants: expected a mapping"),
        ("tenants: {acme: {retry_ratio: x}}", "tenants.acme: retry_ratio must be a decimal number"),
        ("tenants: {'*': {}}", "put it under `default:`"),
        ("default: {grace_ms: 1}\ntenants: {acme: {grace_ms: 2}}", "tenants.acme: grace_ms applies"),
        ("default: {top_contributors: 300}", "default: contributors_tracked must be >= top_contributors"),
    ],
)
def test_apply_refuses_the_whole_file_on_one_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_apply({}, yaml.safe_load(text))


def test_the_worker_resolves_what_it_reads_and_skips_what_it_cannot() -> None:
    settings = DetectorSettings()
    assert settings.apply([(b"*", b'{"min_retries": 3}'), (b"acme", b'{"retry_ratio": "0.5"}'), (b"x", b"{")])
    assert settings.invalid == {
        "x": "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    }
    resolved = settings.resolved()
    assert resolved.tenants == {"acme": DetectorConfig(min_retries=3, retry_ratio=Decimal("0.5"))}
    settings.apply([(b"acme", None), (b"*", None)])  # tombstones: back to the defaults
    assert settings.resolved().default == DetectorConfig() and settings.resolved().tenants == {}


def test_replacing_the_thresholds_keeps_what_the_detectors_learnt() -> None:
    det = Detectors()
    det.load_baselines({"subjects": [[["acme", "chat", "gpt-4o"], 5, 1, 30, 0]]})
    det.replace_configs(DetectorConfig(min_retries=3), {"acme": DetectorConfig(retry_ratio=Decimal("0.5"))})
    assert det.config_for("acme").retry_ratio == Decimal("0.5") and det.config_for("globex").min_retries == 3
    assert det.baselines()["subjects"] == [[["acme", "chat", "gpt-4o"], 5, 1, 30, 0]]
    det.replace_configs(DetectorConfig(), {})
    assert det.config_for("acme") == DetectorConfig()
