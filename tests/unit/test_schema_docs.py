"""docs/contract.md stays in step with the schema and with the reject reasons the code can produce."""

from __future__ import annotations

import json
import re
from pathlib import Path

import costplane.publisher.codec as codec_module
import costplane.publisher.jsonio as jsonio_module
import costplane.publisher.validation as validation_module
from costplane.publisher.codec import schema_text

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def test_every_event_field_is_in_the_contract_table() -> None:
    fields = [f["name"] for f in json.loads(schema_text("usage_event"))["fields"]]
    rows = re.findall(r"^\| `([a-z_]+)` \|", CONTRACT, flags=re.MULTILINE)
    assert [r for r in rows if r in fields] == fields


def test_every_reject_reason_the_code_can_produce_is_documented() -> None:
    pattern = re.compile(r'(?:InvalidEvent|Reject|_Rejected)\(\s*"([a-z_]+)"|"((?:negative|absurd|out_of)_[a-z_]+)"')
    reasons: set[str] = set()
    for module in (validation_module, codec_module, jsonio_module):
        assert module.__file__ is not None
        for a, b in pattern.findall(Path(module.__file__).read_text()):
            reasons.add(a or b)
    assert {"negative_tokens", "absurd_tokens", "undecodable", "unknown_schema", "tenant_mismatch"} <= reasons
    assert sorted(r for r in reasons if f"`{r}`" not in CONTRACT) == []
