"""Price catalog (versioned, exact), the cost of a usage record, and offline token estimation.

Entry points: :func:`costplane.pricing.catalog.default_catalog` / :func:`~costplane.pricing.catalog.load_catalog`
→ :class:`~costplane.pricing.catalog.PriceCatalog` ``.price(provider, model, TokenUsage(...))``, and
:func:`costplane.pricing.tokens.count_text` / :func:`~costplane.pricing.tokens.count_messages`.
Imports only the standard library and tiktoken, so apps can embed it. See docs/pricing.md.
"""
