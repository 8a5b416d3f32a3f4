"""Chargeback rows in the FinOps FOCUS shape, so cost tools that read FOCUS take costplane's numbers as they are.

One row per day, provider, model and chargeback group. costplane knows list prices and no negotiated discounts or
credits, so BilledCost, EffectiveCost and ListCost are the same computed cost (exact decimal USD); a provider's
own billed amount is reconciled separately. Only the FOCUS columns this data can fill are written.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from costplane.reports.money import usd
from costplane.reports.options import ReportOptions

FOCUS_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "ProviderName",
    "ServiceName",
    "ServiceCategory",
    "ResourceId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "Tags",
)
#: FOCUS's allowed ServiceCategory value for model APIs.
SERVICE_CATEGORY = "AI and Machine Learning"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def focus_rows(rows: list[dict[str, Any]], options: ReportOptions) -> list[dict[str, str]]:
    """FOCUS rows from the ``focus`` query's rows (groupings ``d0``…, ``_day``, ``_provider``, ``_model``)."""
    out: list[dict[str, str]] = []
    for r in rows:
        day: date = r["_day"]
        start = max(datetime.combine(day, time(), UTC), options.since)
        end = datetime.combine(day, time(), UTC) + timedelta(days=1)
        if options.until is not None:
            end = min(end, options.until)
        tags = {g.given: r[f"d{i}"] for i, g in enumerate(options.by) if r[f"d{i}"] is not None}
        cost = usd(int(r["cost_nanos"]))
        group = ", ".join(f"{k}={v}" for k, v in tags.items()) or "untagged"
        out.append(
            {
                "BilledCost": cost,
                "EffectiveCost": cost,
                "ListCost": cost,
                "BillingCurrency": "USD",
                "ChargePeriodStart": _iso(start),
                "ChargePeriodEnd": _iso(end),
                "ChargeCategory": "Usage",
                "ChargeDescription": f"{r['_model']} tokens ({group})",
                "ProviderName": r["_provider"],
                "ServiceName": f"{r['_provider']} model API",
                "ServiceCategory": SERVICE_CATEGORY,
                "ResourceId": r["_model"],
                "ConsumedQuantity": str(int(r["tokens"])),
                "ConsumedUnit": "Tokens",
                "Tags": json.dumps({str(k): str(v) for k, v in tags.items()}, sort_keys=True),
            }
        )
    return out
