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
        ),
        PostgresMigration(
            version: 2,
            name: "claim_function",
            sql: #"""
                -- swift-dedup PostgreSQL schema, version 2: the claim as a function (the completion, version 3, too).
                -- Sent as text, the claim's statement took the server longer to parse and plan than to run, on
                -- every call (a client pool sends unnamed statements). Behind a function the client sends a short
                -- call, and PL/pgSQL plans the statement inside once per connection and keeps the plan. Each
                -- function runs one statement, so a transition is still one statement at one instant:
                -- statement_timestamp() is the time the caller's call began.
                -- SET search_path FROM CURRENT (this schema, while migrating): the bodies find their table here,
                -- whatever search_path the caller has. SET plan_cache_mode = force_generic_plan: the planner
                -- estimates an array parameter by its values, so left to choose it plans every call afresh
                -- (a custom plan always looks cheaper than the generic one); the generic plan is the same
                -- primary-key plan and is kept.

                -- Claims the keys in $2 (namespaces in $1, and so on, one element per key): the rows a claim may
                -- acquire are upserted (the WHERE of DO UPDATE decides takeovers on the row's newest version,
                -- under its row lock, for the statement only); the rows it may not are answered from the
                -- statement's snapshot. Keys are inserted sorted, so concurrent batches lock rows in one order.
                -- One row per key, in input order: its position, now, the lease taken (NULLs when none), and the
                -- existing record when no lease was taken (NULLs when none either).
                -- $10, when not NULL, sets lock_timeout (milliseconds) for the rest of the caller's transaction
                -- before the upsert, so a wait on a row another transaction holds ends in lock_not_available
                -- (55P03): the claim's own wait, and in a transaction the statements after it, without a round
                -- trip of their own.
                CREATE FUNCTION dedup_claim(
                    namespaces bytea[], keys bytea[], owner_tokens bytea[], owner_labels bytea[], lease_ms bigint[],
                    retention_ms bigint[], fingerprints bytea[], has_fingerprints boolean[], broker_times bigint[],
                    lock_timeout_ms bigint
                ) RETURNS TABLE (
                    input_position bigint, now_ms bigint, lease_fencing bigint, lease_attempt bigint, lease_created_at bigint,
                    lease_lease_until bigint, lease_expires_at bigint, lease_fingerprint bytea, lease_broker_ms bigint,
                    record_state text, record_owner_token bytea, record_owner_label bytea, record_fencing bigint,
                    record_attempt bigint, record_created_at bigint, record_lease_until bigint, record_completed_at bigint,
                    record_expires_at bigint, record_fingerprint bytea, record_result bytea, record_broker_ms bigint
                ) LANGUAGE plpgsql VOLATILE
                SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
                #variable_conflict use_column
                BEGIN
                    IF $10 IS NOT NULL THEN
                        PERFORM set_config('lock_timeout', $10::text, true);
                    END IF;
                    RETURN QUERY
                    WITH clock AS (SELECT floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint AS now),
                    input AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) WITH ORDINALITY
                        AS i(namespace, key, owner_token, owner_label, lease_ms, retention_ms, fingerprint, has_fingerprint, broker_ms, n)),
                    claimed AS (
                        INSERT INTO dedup_records AS r (namespace, key, state, owner_token, owner_label, fencing, attempt,
                            created_at, lease_until, completed_at, expires_at, fingerprint, result, broker_ms)
                        SELECT i.namespace, i.key, 'in_flight', i.owner_token, i.owner_label, 1, 1, c.now, c.now + i.lease_ms, NULL,
                            c.now + i.lease_ms + i.retention_ms, CASE WHEN i.has_fingerprint THEN i.fingerprint END, NULL,
                            NULLIF(i.broker_ms, -1)
                        FROM input i CROSS JOIN clock c ORDER BY i.namespace, i.key
                        ON CONFLICT (namespace, key) DO UPDATE SET state = 'in_flight', owner_token = excluded.owner_token,
                            owner_label = excluded.owner_label,
                            fencing = CASE WHEN r.expires_at > excluded.created_at THEN r.fencing + 1 ELSE 1 END,
                            attempt = CASE WHEN r.expires_at > excluded.created_at THEN r.attempt + 1 ELSE 1 END,
                            created_at = CASE WHEN r.expires_at > excluded.created_at THEN r.created_at ELSE excluded.created_at END,
                            lease_until = excluded.lease_until, completed_at = NULL, expires_at = excluded.expires_at,
                            fingerprint = CASE WHEN r.expires_at > excluded.created_at
                                THEN coalesce(r.fingerprint, excluded.fingerprint) ELSE excluded.fingerprint END,
                            result = NULL,
                            broker_ms = CASE WHEN r.expires_at > excluded.created_at THEN r.broker_ms ELSE excluded.broker_ms END
                        WHERE r.expires_at <= excluded.created_at OR (r.state = 'in_flight' AND r.lease_until <= excluded.created_at
                            AND (r.fingerprint IS NULL OR excluded.fingerprint IS NULL OR r.fingerprint = excluded.fingerprint))
                        RETURNING r.namespace, r.key, r.fencing, r.attempt, r.created_at, r.lease_until, r.expires_at, r.fingerprint,
                            r.broker_ms)
                    SELECT i.n, c.now, k.fencing, k.attempt, k.created_at, k.lease_until, k.expires_at, k.fingerprint, k.broker_ms,
                        e.state, e.owner_token, e.owner_label, e.fencing, e.attempt, e.created_at, e.lease_until, e.completed_at,
                        e.expires_at, e.fingerprint, e.result, e.broker_ms
                    FROM input i CROSS JOIN clock c LEFT JOIN claimed k ON k.namespace = i.namespace AND k.key = i.key
                    LEFT JOIN dedup_records e ON k.key IS NULL AND e.namespace = i.namespace AND e.key = i.key
                    ORDER BY i.n;
                END
                $$;

                """#
        ),
        PostgresMigration(
            version: 3,
            name: "complete_function",
            sql: #"""
                -- swift-dedup PostgreSQL schema, version 3: the completion as a function, for the reasons of
                -- version 2 (0002_claim_function.sql). One migration is one statement (the extended protocol).

                -- Completes the leases of $3 (owner-checked: live, in flight, and the lease's token; a passed lease
                -- not taken over is current). Returns the input positions of the keys it completed.
                CREATE FUNCTION dedup_complete(
                    namespaces bytea[], keys bytea[], owner_tokens bytea[], retention_ms bigint[], results bytea[],
                    has_results boolean[]
                ) RETURNS TABLE (input_position bigint) LANGUAGE plpgsql VOLATILE
                SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
                #variable_conflict use_column
                BEGIN
                    RETURN QUERY
                    WITH clock AS (SELECT floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint AS now),
                    input AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6) WITH ORDINALITY
                        AS i(namespace, key, owner_token, retention_ms, result, has_result, n)),
                    completed AS (
                        UPDATE dedup_records AS r SET state = 'completed', owner_token = NULL, owner_label = NULL,
                            lease_until = NULL, completed_at = c.now, expires_at = c.now + i.retention_ms,
                            result = CASE WHEN i.has_result THEN i.result END
                        FROM input i CROSS JOIN clock c
                        WHERE r.namespace = i.namespace AND r.key = i.key AND r.state = 'in_flight'
                            AND r.owner_token = i.owner_token AND r.expires_at > c.now
                        RETURNING i.n)
                    SELECT n FROM completed;
                END
                $$;

                """#
        ),
    ]
}
