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
