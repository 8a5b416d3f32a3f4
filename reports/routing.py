"""Which cheaper model to suggest for a model: an ordered list of name patterns, the first match wins.

The shipped defaults step down one size within a provider family (gpt-4o → gpt-4o-mini, Claude Sonnet → Haiku,
Gemini Pro → Flash, …). A YAML file (``COSTPLANE_REPORTS_ROUTING_FILE``) replaces them: a mapping of regular
expressions (matched against the whole model name) to the model to suggest, in file order::

    "gpt-4o(-\\d{4}-\\d{2}-\\d{2})?": gpt-4o-mini
    "claude-sonnet-.*": claude-haiku-4-5

Every suggested model must be one the catalog prices, or the map is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from costplane.pricing.catalog import PriceCatalog
from costplane.reports.errors import ReportError

_DATED = r"(-\d{4}-\d{2}-\d{2}|-\d{8})?"

#: (pattern, cheaper model): one step down within each family the shipped catalog prices.
DEFAULT_ROUTES: tuple[tuple[str, str], ...] = (
    (rf"gpt-4o{_DATED}", "gpt-4o-mini"),
    (rf"gpt-4\.1{_DATED}", "gpt-4.1-mini"),
    (rf"gpt-4\.1-mini{_DATED}", "gpt-4.1-nano"),
    (rf"gpt-5{_DATED}", "gpt-5-mini"),
    (rf"gpt-5-mini{_DATED}", "gpt-5-nano"),
    (rf"o3{_DATED}", "o4-mini"),
    (r"claude-opus-.*", "claude-sonnet-4-5"),
    (r"claude-(3-5-|3-7-)?sonnet.*", "claude-haiku-4-5"),
    (r"gemini-2\.5-pro.*", "gemini-2.5-flash"),
    (r"gemini-2\.5-flash", "gemini-2.5-flash-lite"),
    (r"mistral-large.*", "mistral-small-latest"),
    (r"command-r-plus.*", "command-r-08-2024"),
)


@dataclass(frozen=True, slots=True)
class RoutingMap:
    """Ordered (compiled pattern, cheaper model) rules."""

    rules: tuple[tuple[re.Pattern[str], str], ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]], catalog: PriceCatalog | None = None) -> RoutingMap:
        rules = []
        for pattern, target in pairs:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ReportError(f"routing pattern {pattern!r} is not a regular expression: {exc}") from None
            if catalog is not None and not catalog.is_priced(None, target):
                raise ReportError(f"routing map suggests {target!r}, which the price catalog does not know")
            rules.append((compiled, target))
        return cls(tuple(rules))

    @classmethod
    def shipped(cls, catalog: PriceCatalog) -> RoutingMap:
        """The shipped defaults, those whose suggestion the catalog prices."""
        return cls.of((p, t) for p, t in DEFAULT_ROUTES if catalog.is_priced(None, t))

    @classmethod
    def from_document(cls, document: object, source: str, catalog: PriceCatalog) -> RoutingMap:
        """A routing map from a parsed YAML document (``source`` names it in errors)."""
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise ReportError(f"the routing map {source} must map model patterns to model names")
        return cls.of(((str(k), v) for k, v in document.items()), catalog)

    def cheaper(self, model: str) -> str | None:
        """The model to suggest instead of ``model`` (None: no rule, or it already is the suggestion)."""
        for pattern, target in self.rules:
            if pattern.fullmatch(model):
                return None if target == model else target
        return None
