-- Record which Kafka partitions a batch covers, so a sink that takes over partitions from a dead sink (several
-- sinks sharing one server) recovers exactly the interrupted batches of those partitions, and never a batch
-- another live sink is still writing for partitions it owns.
ALTER TABLE $db.sink_batches ADD COLUMN IF NOT EXISTS partitions Array(Int32);
