"""The stream worker: Faust agents for pricing, spend windows and decisions; a ClickHouse sink loop; the web API.

The pure steps (:mod:`.spend`, :mod:`.pricing`, :mod:`.dedup`) know nothing of Kafka, Redis or ClickHouse; the
modules that do (:mod:`.app`, :mod:`.sinkloop`, :mod:`.effects`) only move data in and out of them.
"""
