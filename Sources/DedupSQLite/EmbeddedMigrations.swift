// The migrations of Migrations/sqlite/, embedded so the library needs no resource bundle.
// Keep this file equal to those files: a test compares them byte for byte.
// A new migration: add Migrations/sqlite/NNNN_name.sql and its text here as one more element.

extension SQLiteMigration {
    /// Every migration this library knows, in version order.
    public static let all: [SQLiteMigration] = [
        SQLiteMigration(
            version: 1,
            name: "create_records",
            sql: #"""
                -- swift-dedup SQLite schema, version 1: the dedup records.
                -- Times are integer milliseconds since the Unix epoch on the host's clock.
                -- A record is live while expires_at > now; a record that is not live counts as absent.
                CREATE TABLE dedup_records (
                    namespace    TEXT    NOT NULL,
                    key          TEXT    NOT NULL,
                    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
                    owner_token  TEXT,
                    fencing      INTEGER NOT NULL,
                    attempt      INTEGER NOT NULL,
                    created_at   INTEGER NOT NULL,
                    lease_until  INTEGER,
                    completed_at INTEGER,
                    expires_at   INTEGER NOT NULL,
                    fingerprint  TEXT,
                    result       BLOB,
                    PRIMARY KEY (namespace, key),
                    CHECK (CASE state
                        WHEN 'in_flight' THEN owner_token IS NOT NULL AND lease_until IS NOT NULL AND completed_at IS NULL
                        ELSE owner_token IS NULL AND lease_until IS NULL AND completed_at IS NOT NULL
                    END)
                ) WITHOUT ROWID;

                -- No secondary index: every claim and completion would pay for it on the hot path (each one costs
                -- about a third of the throughput). Inspection, reset and purge (rare, off the hot path) walk the
                -- primary key instead.

                """#
        ),
        SQLiteMigration(
            version: 2,
            name: "owner_label",
            sql: #"""
                -- swift-dedup SQLite schema, version 2: who holds a lease, readable.
                -- owner_label: the holder's label (ClaimRequest.ownerLabel; host:pid by default, or what the
                -- consumer is configured with, e.g. a pod name; 1 to 128 bytes of any UTF-8), written beside
                -- owner_token by every claim and takeover. NULL once completed (a completed record keeps no holder,
                -- as it keeps no owner token), and on rows claimed before this migration.
                ALTER TABLE dedup_records ADD COLUMN owner_label TEXT;

                """#
        ),
        SQLiteMigration(
            version: 3,
            name: "broker_time",
            sql: #"""
                -- swift-dedup SQLite schema, version 3: when the broker took the message.
                -- broker_ms: ClaimRequest.brokerTime in integer milliseconds since the Unix epoch, written by the
                -- claim that creates the row (a takeover, renewal or completion keeps it); NULL when the claim
                -- gave none, and on rows written before this migration. list, reset and replay select by
                -- coalesce(broker_ms, coalesce(completed_at, created_at)). No index, as for the other times: they
                -- walk the primary key (a namespace's range of it), and the hot path pays for no index.
                ALTER TABLE dedup_records ADD COLUMN broker_ms INTEGER;

                """#
        ),
    ]
}
