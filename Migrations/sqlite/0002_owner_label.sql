-- swift-dedup SQLite schema, version 2: who holds a lease, readable.
-- owner_label: the holder's label (ClaimRequest.ownerLabel; host:pid by default, or what the
-- consumer is configured with, e.g. a pod name; 1 to 128 bytes of any UTF-8), written beside
-- owner_token by every claim and takeover. NULL once completed (a completed record keeps no holder,
-- as it keeps no owner token), and on rows claimed before this migration.
ALTER TABLE dedup_records ADD COLUMN owner_label TEXT;
