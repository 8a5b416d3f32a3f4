"""The ClickHouse sink: raw usage events and rollups with exactly-once totals over at-least-once delivery.

Split like a stream-to-warehouse consumer: :mod:`.processor` turns priced events into rows (pure),
:mod:`.writer` does the ClickHouse I/O with the dedup protocol, :mod:`.sink` batches and decides when to flush,
:mod:`.migrations` owns the schema, :mod:`.query` the reports, :mod:`.ownership` the embedded directory lock.
Importing this package does not import clickhouse-connect; only opening a client does.
"""
