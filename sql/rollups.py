"""The rollup families and the dimensions each keeps, in column order: the one table the sink writes its rollups by
(``costplane.streams.sink.processor``) and the reports choose their source by (``costplane.reports.dimensions``).

``sql/migrations/0005_report_rollups.sql`` creates the tables; a rollup table is ``rollup_<family>_<granularity>``.
"""

from __future__ import annotations

ROLLUP_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "spend": (
        "tenant",
        "team",
        "feature",
        "model",
        "provider",
        "env",
        "status",
        "service_tier",
        "plan",
        "operation",
        "unpriced",
    ),
    "users": ("tenant", "user_id", "plan", "team", "feature", "env"),
}
