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
