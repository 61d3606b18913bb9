-- swift-dedup SQLite schema, version 3: when the broker took the message.
-- broker_ms: ClaimRequest.brokerTime in integer milliseconds since the Unix epoch, written by the
-- claim that creates the row (a takeover, renewal or completion keeps it); NULL when the claim
-- gave none, and on rows written before this migration. list, reset and replay select by
-- coalesce(broker_ms, coalesce(completed_at, created_at)). No index, as for the other times: they
-- walk the primary key (a namespace's range of it), and the hot path pays for no index.
ALTER TABLE dedup_records ADD COLUMN broker_ms INTEGER;
