"""Reports over the ledger: each report's question, dimensions, JSON columns and the math that is not SQL.

The SQL itself lives in ``sql/queries/``; running it is the job of the ClickHouse shell
(``costplane.streams.sink.query``). Nothing here imports Faust or ClickHouse.
"""
