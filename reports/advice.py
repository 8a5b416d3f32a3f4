"""The advisor: ranked changes with the money each would save, read off the reports' rows.

Every opportunity comes from one report row — the evidence is that row's numbers and the command that shows it —
and its saving is the row's saving over the range, extrapolated to 30 days: ``saving × 30 days ÷ range length``,
rounded half-even to nano-USD. Nothing below the floor (``COSTPLANE_REPORTS_ADVISE_FLOOR_USD``, default $1 a month)
is listed. Confidence says how much the estimate assumes; changes that can degrade output carry a caveat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from costplane.pricing.cost import round_half_even
from costplane.reports.base import present
from costplane.reports.money import percent, usd, usd_display
from costplane.reports.options import ReportOptions
from costplane.reports.savings import SHORT_OUTPUT_TOKENS

Row = dict[str, Any]
MONTH = timedelta(days=30)
#: A group is a routing candidate when at least this share of its outputs are short.
ROUTING_SHORT_SHARE = 0.5

#: The report (and grouping) each kind of advice reads.
SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cache_static_prefix": ("caching", ("tenant", "feature", "model")),
    "batch_background": ("batch", ("tenant", "feature", "model")),
    "route_smaller_model": ("models", ("tenant", "feature", "model")),
    "set_max_tokens": ("max-tokens", ("tenant", "feature", "model")),
    "fix_retries": ("retries", ("tenant", "feature", "model")),
    "stop_reembedding": ("embeddings", ("tenant", "feature")),
    "cap_nonprod": ("environments", ("tenant", "env")),
    "trim_context": ("context", ("tenant", "feature")),
}


@dataclass(frozen=True, slots=True)
class Opportunity:
    kind: str
    scope: dict[str, Any]
    evidence: dict[str, Any]
    saving_nanos: int
    monthly_saving_nanos: int
    confidence: str
    reason: str
    action: str
    caveat: str | None = None

    def to_json(self) -> Row:
        """The JSON object of ``costplane advise --format json`` (money as ``*_nanos`` with ``*_usd`` beside)."""
        (evidence,) = present([self.evidence])
        return {
            "kind": self.kind,
            "scope": self.scope,
            "evidence": evidence,
            "monthly_saving_nanos": self.monthly_saving_nanos,
            "monthly_saving_usd": usd(self.monthly_saving_nanos),
            "confidence": self.confidence,
            "confidence_reason": self.reason,
            "action": self.action,
            "caveat": self.caveat,
        }

    def line(self) -> str:
        """One line for people."""
        where = "/".join(str(v) for v in self.scope.values() if v is not None) or "everything"
        return f"{usd_display(self.monthly_saving_nanos)}/month — {self.kind} in {where}: {self.action}"


def monthly(saving_nanos: int, range_length: timedelta) -> int:
    """A saving over ``range_length`` extrapolated to 30 days, rounded half-even."""
    seconds = int(range_length.total_seconds())
    return round_half_even(saving_nanos * int(MONTH.total_seconds()), seconds) if seconds > 0 else 0


def _scope(row: Row, keys: Sequence[str]) -> dict[str, Any]:
    return {k: row[k] for k in keys if k in row and k != "env"}


def _command(report: str, by: Sequence[str], scope: Mapping[str, Any]) -> str:
    tenant = f" --tenant {scope['tenant']}" if scope.get("tenant") else ""
    return f"costplane report {report} --by {','.join(by)}{tenant}"


def _cache(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    saving = row["would_save_nanos"]
    return (
        saving,
        {k: row[k] for k in ("uncached_prefix_tokens", "uncached_prefix_cost_nanos", "would_save_nanos")},
        "medium",
        "priced with the calls' own cache-read prices; assumes the system prompt is the same on every call",
        "Put the static system prompt first and enable prompt caching so it is billed at the cache-read price.",
        None,
    )


def _batch(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    if row["saving_nanos"] is None:
        return None
    configured = row["reasons"] == ["configured feature"]
    return (
        row["saving_nanos"],
        {k: row[k] for k in ("calls", "cost_nanos", "batch_cost_nanos", "reasons")},
        "high" if configured else "medium",
        "configured as background work" if configured else f"looks like background work: {', '.join(row['reasons'])}",
        "Send these calls through the provider's batch API (results within 24 h at the batch price).",
        None,
    )


def _route(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    if row["saving_nanos"] is None or (row["short_output_share"] or 0) < ROUTING_SHORT_SHARE:
        return None
    return (
        row["saving_nanos"],
        {
            k: row[k]
            for k in (
                "calls",
                "p50_output_tokens",
                "short_output_share",
                "cost_nanos",
                "cheaper_model",
                "cost_on_cheaper_nanos",
            )
        },
        "medium",
        f"{percent(row['short_output_share'])} of outputs are ≤ {SHORT_OUTPUT_TOKENS} tokens "
        "(classification or extraction shapes)",
        f"Route these calls to {row['cheaper_model']}.",
        "A smaller model can answer worse: compare a sample of its outputs before switching.",
    )


def _max_tokens(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    if not row["calls_without_max_tokens"]:
        return None
    return (
        row["excess_output_cost_nanos"],
        {
            k: row[k]
            for k in (
                "calls",
                "calls_without_max_tokens",
                "p50_output_tokens",
                "p99_output_tokens",
                "excess_output_cost_nanos",
            )
        },
        "low",
        "the output tokens above the p99 on uncapped calls, at their own prices: what a cap there would have cut",
        f"Set max_tokens (about {row['p99_output_tokens']} here, the p99 output) so one runaway generation cannot "
        "bill thousands of tokens.",
        "A cap too low truncates answers: set it above the outputs you need, and watch for finish_reason=length.",
    )


def _retries(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    return (
        row["wasted_cost_nanos"],
        {k: row[k] for k in ("requests", "retried_requests", "retry_rate", "failed_attempts", "wasted_cost_nanos")},
        "high",
        "failed attempts are billed in full",
        "Fix what makes these attempts fail (validate output with structured outputs, back off on 429s) "
        "instead of resending the whole prompt.",
        None,
    )


def _embeddings(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    return (
        row["repeat_cost_nanos"],
        {k: row[k] for k in ("embedding_calls", "distinct_content", "repeat_calls", "repeat_cost_nanos")},
        "high",
        "the same content_hash was embedded again with the same model",
        "Cache embeddings by content hash and embed only changed content.",
        None,
    )


def _nonprod(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    if not row["nonprod"]:
        return None
    return (
        row["cost_nanos"],
        {k: row[k] for k in ("env", "attempts", "cost_nanos", "share")},
        "medium",
        f"spend in the {row['env']} environment",
        f"Cap {row['env']} with a budget (costplane budget set … --scope env={row['env']}) or use a mock model "
        "for load tests.",
        None,
    )


def _context(row: Row, by: Sequence[str]) -> tuple[int, dict[str, Any], str, str, str, str | None] | None:
    return (
        row["history_cost_nanos"],
        {"history_cost_nanos": row["history_cost_nanos"], "growth": row["growth"]},
        "medium",
        "conversation history is re-sent on every turn",
        "Summarise or window the history after a few turns, and cache the stable part of the prompt.",
        "Trimming history changes what the model sees: check long conversations still work.",
    )


BUILDERS: dict[str, Callable[[Row, Sequence[str]], tuple[int, dict[str, Any], str, str, str, str | None] | None]] = {
    "cache_static_prefix": _cache,
    "batch_background": _batch,
    "route_smaller_model": _route,
    "set_max_tokens": _max_tokens,
    "fix_retries": _retries,
    "stop_reembedding": _embeddings,
    "cap_nonprod": _nonprod,
    "trim_context": _context,
}


def _context_rows(rows: list[Row], by: Sequence[str]) -> list[Row]:
    """The context report has a row per turn: one row per group with the history cost of all its turns."""
    merged: dict[tuple[Any, ...], Row] = {}
    for r in rows:
        key = tuple(r[k] for k in by)
        have = merged.setdefault(key, {**{k: r[k] for k in by}, "history_cost_nanos": 0, "growth": r["growth"]})
        have["history_cost_nanos"] += r["history_cost_nanos"]
    return list(merged.values())


def advise(results: Mapping[str, list[Row]], spans: Mapping[str, timedelta], floor_nanos: int) -> list[Opportunity]:
    """Opportunities from each report's rows (keyed by report name), largest monthly saving first.

    ``spans`` is how long a stretch each report's rows cover (shorter than the range asked for when the raw TTL cut
    it), so each saving is extrapolated from the time it was really seen over.
    """
    found: list[Opportunity] = []
    for kind, (report, by) in SOURCES.items():
        rows = results.get(report, [])
        range_length = spans.get(report, timedelta(0))
        if report == "context":
            rows = _context_rows(rows, by)
        for row in rows:
            built = BUILDERS[kind](row, by)
            if built is None:
                continue
            saving, evidence, confidence, reason, action, caveat = built
            scope = _scope(row, by)
            month = monthly(saving, range_length)
            if saving <= 0 or month < floor_nanos:
                continue
            evidence = {**evidence, "report": _command(report, by, scope)}
            found.append(Opportunity(kind, scope, evidence, saving, month, confidence, reason, action, caveat))
    found.sort(key=lambda o: (-o.monthly_saving_nanos, o.kind, str(sorted(o.scope.items()))))
    return found


class Answer(Protocol):
    """What a report run returns that the advisor reads (``costplane.streams.sink.query.ReportResult``)."""

    rows: list[Row]
    since: datetime | None
    notes: list[str]


def gather(
    run: Callable[[ReportOptions], Answer], base: ReportOptions, floor_nanos: int
) -> tuple[list[Opportunity], list[str]]:
    """Run every source report for ``base``'s range and tenant through ``run`` (local or the worker's API) and rank
    the opportunities; also the reports' notes (a range the raw TTL cut)."""
    end = base.until or base.now.replace(second=0, microsecond=0)
    results: dict[str, list[Row]] = {}
    spans: dict[str, timedelta] = {}
    notes: list[str] = []
    for report, by in SOURCES.values():
        answer = run(replace(base, report=report).with_by(by))
        results[report] = answer.rows
        spans[report] = end - (answer.since or base.since)
        notes += [f"{report}: {note}" for note in answer.notes]
    return advise(results, spans, floor_nanos), notes
