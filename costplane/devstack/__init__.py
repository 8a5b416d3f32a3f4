"""The local development stack: real Kafka (KRaft), redis-server and embedded ClickHouse, no Docker."""
