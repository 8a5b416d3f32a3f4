"""``costplane import`` parsing: each format → validated events with stable ids, bad lines → reasons. Offline."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.integrations.history import Rejected, parse_history
from costplane.publisher.event import UsageEvent

DAY_MS = 86_400_000
T = 1_760_000_000_000  # 2025-10-09T08:53:20Z


def _events(items: list[UsageEvent | Rejected]) -> list[UsageEvent]:
    return [i for i in items if isinstance(i, UsageEvent)]


def test_jsonl_fills_defaults_and_derives_the_same_id_twice() -> None:
    lines = [
        json.dumps({"occurred_at": T, "tenant": "acme", "provider": "openai", "model": "gpt-4o", "input_tokens": 10}),
        "",
        json.dumps(
            {
                "event_id": "0191d7a0-0000-7000-8000-000000000001",
                "occurred_at": "2025-10-09T00:00:00Z",
                "provider": "anthropic",
                "model": "claude-3-5-haiku-20241022",
                "request_id": "r1",
                "attempt": 2,
                "status": "rate_limited",
            }
        ),
    ]
    first = list(parse_history(lines, "jsonl", tenant="fallback"))
    again = list(parse_history(lines, "jsonl", tenant="fallback"))
    a, b = _events(first)
    assert a.event_id == _events(again)[0].event_id and a.request_id == a.event_id
    assert (a.attempt, a.status, a.input_tokens) == (1, "ok", 10)
    assert (b.tenant, b.occurred_at, b.attempt, b.status) == ("fallback", 1_759_968_000_000, 2, "rate_limited")


def test_bad_lines_are_reported_with_numbers_and_reasons() -> None:
    lines = [
        "{not json",
        json.dumps({"occurred_at": T, "tenant": "a", "provider": "p", "model": "m", "input_tokens": -5}),
        json.dumps({"occurred_at": T, "tenant": "a", "provider": "p", "model": "m", "colour": "red"}),
        json.dumps([1, 2]),
    ]
    got = list(parse_history(lines, "jsonl"))
    assert [(r.line, r.reason) for r in got if isinstance(r, Rejected)] == [
        (1, "bad_json"),
        (2, "negative_tokens"),
        (3, "unknown_field"),
        (4, "bad_shape"),
    ]


def test_openai_usage_csv_buckets() -> None:
    csv_text = [
        "start_time,end_time,project_id,num_model_requests,user_id,api_key_id,model,batch,input_tokens,"
        "input_cached_tokens,output_tokens\n",
        f"{T // 1000},{T // 1000 + 86400},proj_1,12,user-1,key_1,gpt-4o-mini-2024-07-18,false,5000,1200,800\n",
        f"{T // 1000},{T // 1000 + 86400},proj_1,3,,key_1,gpt-4o,true,100,0,50\n",
        "oops,,,,,,gpt-4o,,1,0,1\n",
        "1,2,3\n",
    ]
    items = list(parse_history(csv_text, "openai-usage-csv", tenant="acme"))
    first, second = _events(items)
    assert (first.occurred_at, first.model, first.input_tokens, first.cached_input_tokens, first.output_tokens) == (
        T,
        "gpt-4o-mini-2024-07-18",
        3800,
        1200,
        800,
    )
    assert first.attributes == {"project_id": "proj_1", "api_key_id": "key_1", "num_model_requests": "12"}
    assert first.user_id == "user-1" and second.user_id is None and second.service_tier == "batch"
    assert [(r.line, r.reason) for r in items if isinstance(r, Rejected)] == [(4, "bad_timestamp"), (5, "bad_csv")]
    assert first.event_id == _events(list(parse_history(csv_text, "openai-usage-csv", tenant="acme")))[0].event_id
    [no_tenant, *_] = list(parse_history(csv_text, "openai-usage-csv"))
    assert isinstance(no_tenant, Rejected) and no_tenant.reason == "missing_tenant"


def test_litellm_spendlogs_json_and_csv() -> None:
    row = {
        "request_id": "chatcmpl-abc",
        "call_type": "acompletion",
        "spend": 0.00042,
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "startTime": "2025-10-09 08:53:20",
        "model": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "user": "u-7",
        "team_id": "team-search",
        "metadata": json.dumps({"user_api_key_org_id": "acme"}),
        "request_tags": '["prod", "search"]',
        "cache_hit": "False",
        "status": "success",
    }
    [event] = _events(list(parse_history([json.dumps(row)], "litellm-spendlogs")))
    assert (event.tenant, event.team, event.user_id, event.provider, event.model) == (
        "acme",
        "team-search",
        "u-7",
        "openai",
        "gpt-4o-mini",
    )
    assert (event.occurred_at, event.input_tokens, event.output_tokens, event.status) == (T, 120, 30, "ok")
    assert event.attributes == {
        "litellm_request_id": "chatcmpl-abc",
        "tags": "prod,search",
        "litellm_spend_usd": "0.00042",
    }
    csv_lines = [
        "request_id,model,prompt_tokens,completion_tokens,startTime,status\n",
        "r-1,anthropic/claude-3-5-haiku-20241022,5,6,2025-10-09T08:53:20Z,failure\n",
    ]
    [failed] = _events(list(parse_history(csv_lines, "litellm-spendlogs", tenant="acme")))
    assert (failed.provider, failed.model, failed.status, failed.tenant) == (
        "anthropic",
        "claude-3-5-haiku-20241022",
        "error",
        "acme",
    )


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: object) -> None:
    runner = CliRunner()
    app = build_app()
    bad_format = runner.invoke(app, ["import", "x.jsonl", "--format", "xml"])
    assert bad_format.exit_code == 2 and "--format must be one of" in bad_format.output
    assert "Traceback" not in bad_format.output
    missing = runner.invoke(app, ["import", "/nonexistent/file.jsonl"])
    assert missing.exit_code == 2 and "cannot read /nonexistent/file.jsonl" in missing.output


def test_cli_dry_run_reports_json(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "h.jsonl"
    path.write_text(
        json.dumps({"occurred_at": T, "tenant": "a", "provider": "openai", "model": "gpt-4o"}) + "\n" + "garbage\n"
    )
    result = CliRunner().invoke(build_app(), ["import", str(path), "--dry-run", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["events"], summary["sent"], summary["dry_run"]) == (1, 0, True)
    assert summary["rejected"] == [{"line": 2, "reason": "bad_json", "message": summary["rejected"][0]["message"]}]
