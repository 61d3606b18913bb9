// The migrations of Migrations/postgres/, embedded so the library needs no resource bundle.
// Keep this file equal to those files: a test compares them byte for byte.
// A new migration: add Migrations/postgres/NNNN_name.sql and its text here as one more element.

extension PostgresMigration {
    /// Every migration this library knows, in version order.
    public static let all: [PostgresMigration] = [
        PostgresMigration(
            version: 1,
            name: "create_records",
            sql: #"""
                -- swift-dedup PostgreSQL schema, version 1: the dedup records.
                -- Times are bigint milliseconds since the Unix epoch on the server's clock (statement_timestamp()).
                -- A record is live while expires_at > now; a record that is not live counts as absent.
                -- Identities, tokens, labels and fingerprints are bytea: they may hold any UTF-8, NUL included
                -- (text cannot), and bytea compares by bytes, the order RecordID pages in.
                CREATE TABLE dedup_records (
                    namespace    bytea  NOT NULL,
                    key          bytea  NOT NULL,
                    state        text   NOT NULL CHECK (state IN ('in_flight', 'completed')),
                    owner_token  bytea,
                    owner_label  bytea,
                    fencing      bigint NOT NULL,
                    attempt      bigint NOT NULL,
                    created_at   bigint NOT NULL,
                    lease_until  bigint,
                    completed_at bigint,
                    expires_at   bigint NOT NULL,
                    fingerprint  bytea,
                    result       bytea,
                    broker_ms    bigint,
                    PRIMARY KEY (namespace, key),
                    CHECK (CASE state
                        WHEN 'in_flight' THEN owner_token IS NOT NULL AND lease_until IS NOT NULL AND completed_at IS NULL
                        ELSE owner_token IS NULL AND lease_until IS NULL AND completed_at IS NOT NULL
                    END)
                );

                -- No secondary index: every claim, completion and renewal changes expires_at, and an index on it
                -- would make each of those updates write two indexes instead of none (no HOT update). Inspection,
                -- reset and purge (rare, off the hot path) walk the primary key instead.

                """#
        )
    ]
}
