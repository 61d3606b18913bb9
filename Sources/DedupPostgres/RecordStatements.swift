import Dedup
import Foundation
import PostgresNIO

/// A record row as stored, times in milliseconds (compared before any conversion to `Date`).
struct StoredRecord: Sendable {
    var state: RecordState
    var ownerToken: String?
    var ownerLabel: String?
    var fencing: Int64
    var attempt: Int64
    var createdAt: Int64
    var leaseUntil: Int64?
    var completedAt: Int64?
    var expiresAt: Int64
    var fingerprint: String?
    var result: Data?
    var brokerTime: Int64?

    /// Decodes the columns of ``RecordStatements/columns`` starting at `first`; `nil` when the
    /// row's `state` is `NULL` (an outer join that found no record).
    init?(_ row: PostgresRandomAccessRow, first: Int) throws {
        guard let state = try row[first].decode(String?.self) else { return nil }
        self.state = state == RecordState.completed.rawValue ? .completed : .inFlight
        ownerToken = try row[first + 1].decode(ByteBuffer?.self).map(String.init(buffer:))
        ownerLabel = try row[first + 2].decode(ByteBuffer?.self).map(String.init(buffer:))
        fencing = try row[first + 3].decode(Int64.self)
        attempt = try row[first + 4].decode(Int64.self)
        createdAt = try row[first + 5].decode(Int64.self)
        leaseUntil = try row[first + 6].decode(Int64?.self)
        completedAt = try row[first + 7].decode(Int64?.self)
        expiresAt = try row[first + 8].decode(Int64.self)
        fingerprint = try row[first + 9].decode(ByteBuffer?.self).map(String.init(buffer:))
        result = try row[first + 10].decode(ByteBuffer?.self).map { Data($0.readableBytesView) }
        brokerTime = try row[first + 11].decode(Int64?.self)
    }

    init(
        acquiredBy request: ClaimRequest,
        lease: Lease,
        createdAt: Int64,
        leaseUntil: Int64,
        expiresAt: Int64,
        fingerprint: String?,
        brokerTime: Int64?
    ) {
        state = .inFlight
        ownerToken = request.ownerToken
        ownerLabel = request.ownerLabel
        fencing = lease.fencingToken
        attempt = Int64(lease.attempt)
        self.createdAt = createdAt
        self.leaseUntil = leaseUntil
        completedAt = nil
        self.expiresAt = expiresAt
        self.fingerprint = fingerprint
        result = nil
        self.brokerTime = brokerTime
    }

    func record(_ id: RecordID) -> DedupRecord {
        DedupRecord(
            id: id,
            state: state,
            ownerToken: ownerToken,
            fencingToken: fencing,
            attempt: Int(attempt),
            createdMilliseconds: createdAt,
            leaseUntilMilliseconds: leaseUntil,
            completedMilliseconds: completedAt,
            expiresMilliseconds: expiresAt,
            fingerprint: fingerprint,
            result: result,
            ownerLabel: ownerLabel,
            brokerMilliseconds: brokerTime
        )
    }

    /// The answer this row gives a claim without any write, or `nil` when the claim may acquire
    /// (absent, not live, or an in-flight lease that has passed with no fingerprint conflict).
    static func answerWithoutWrite(_ stored: StoredRecord?, _ request: ClaimRequest, now: Int64) -> ClaimAnswer? {
        guard let stored, stored.expiresAt > now else { return nil }
        if let theirs = stored.fingerprint, let ours = request.fingerprint, theirs != ours {
            return .payloadMismatch(stored.record(request.id))
        }
        switch stored.state {
        case .completed:
            return .duplicate(stored.record(request.id))
        case .inFlight:
            if let leaseUntil = stored.leaseUntil, now < leaseUntil { return .inFlight(stored.record(request.id)) }
            return nil
        }
    }
}

/// The SQL texts of one store (its schema's tables), built once.
///
/// "Now" is the server's: `statement_timestamp()` in whole milliseconds, read once per statement,
/// so a batch is decided at one instant, as one-by-one calls in one moment would be.
struct RecordStatements: Sendable {
    static let columns =
        "state, owner_token, owner_label, fencing, attempt, created_at, lease_until, completed_at, expires_at, fingerprint, result, broker_ms"
    static let now = "floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
    /// The time filters select by (``/Dedup/DedupRecord/selectionTime``).
    static let selectionTime = "coalesce(broker_ms, completed_at, created_at)"

    let table: String
    let claim: String
    let complete: String
    let release: String
    let renew: String
    let read: String

    init(_ names: TableNames) {
        let table = names.records
        self.table = table
        let now = Self.now
        // One statement: the rows a claim may acquire are upserted (the `WHERE` of `DO UPDATE`
        // decides takeovers on the row's newest version, under its row lock, for the statement
        // only); the rows it may not are answered from the statement's snapshot. Keys come in
        // sorted so concurrent batches lock rows in one order and never deadlock.
        claim = """
            WITH clock AS (SELECT \(now) AS now), \
            input AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], $6::bigint[], \
            $7::bytea[], $8::bool[], $9::bigint[]) WITH ORDINALITY \
            AS i(namespace, key, owner_token, owner_label, lease_ms, retention_ms, fingerprint, has_fingerprint, broker_ms, n)), \
            claimed AS (INSERT INTO \(table) AS r (namespace, key, state, owner_token, owner_label, fencing, attempt, \
            created_at, lease_until, completed_at, expires_at, fingerprint, result, broker_ms) \
            SELECT i.namespace, i.key, 'in_flight', i.owner_token, i.owner_label, 1, 1, c.now, c.now + i.lease_ms, NULL, \
            c.now + i.lease_ms + i.retention_ms, CASE WHEN i.has_fingerprint THEN i.fingerprint END, NULL, \
            NULLIF(i.broker_ms, -1) FROM input i CROSS JOIN clock c ORDER BY i.namespace, i.key \
            ON CONFLICT (namespace, key) DO UPDATE SET state = 'in_flight', owner_token = excluded.owner_token, \
            owner_label = excluded.owner_label, \
            fencing = CASE WHEN r.expires_at > excluded.created_at THEN r.fencing + 1 ELSE 1 END, \
            attempt = CASE WHEN r.expires_at > excluded.created_at THEN r.attempt + 1 ELSE 1 END, \
            created_at = CASE WHEN r.expires_at > excluded.created_at THEN r.created_at ELSE excluded.created_at END, \
            lease_until = excluded.lease_until, completed_at = NULL, expires_at = excluded.expires_at, \
            fingerprint = CASE WHEN r.expires_at > excluded.created_at THEN coalesce(r.fingerprint, excluded.fingerprint) \
            ELSE excluded.fingerprint END, result = NULL, \
            broker_ms = CASE WHEN r.expires_at > excluded.created_at THEN r.broker_ms ELSE excluded.broker_ms END \
            WHERE r.expires_at <= excluded.created_at OR (r.state = 'in_flight' AND r.lease_until <= excluded.created_at \
            AND (r.fingerprint IS NULL OR excluded.fingerprint IS NULL OR r.fingerprint = excluded.fingerprint)) \
            RETURNING r.namespace, r.key, r.fencing, r.attempt, r.created_at, r.lease_until, r.expires_at, r.fingerprint, \
            r.broker_ms) \
            SELECT i.n, c.now, k.fencing, k.attempt, k.created_at, k.lease_until, k.expires_at, k.fingerprint, k.broker_ms, \
            \(Self.columns.split(separator: ",").map { "e." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")) \
            FROM input i CROSS JOIN clock c LEFT JOIN claimed k ON k.namespace = i.namespace AND k.key = i.key \
            LEFT JOIN \(table) e ON k.key IS NULL AND e.namespace = i.namespace AND e.key = i.key ORDER BY i.n
            """
        // Owner-checked: live, in flight, and the lease's token (a passed lease not taken over is current).
        complete = """
            WITH clock AS (SELECT \(now) AS now), \
            input AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bytea[], $6::bool[]) \
            WITH ORDINALITY AS i(namespace, key, owner_token, retention_ms, result, has_result, n)) \
            UPDATE \(table) AS r SET state = 'completed', owner_token = NULL, owner_label = NULL, lease_until = NULL, \
            completed_at = c.now, expires_at = c.now + i.retention_ms, result = CASE WHEN i.has_result THEN i.result END \
            FROM input i CROSS JOIN clock c WHERE r.namespace = i.namespace AND r.key = i.key AND r.state = 'in_flight' \
            AND r.owner_token = i.owner_token AND r.expires_at > c.now RETURNING i.n
            """
        release = """
            DELETE FROM \(table) WHERE namespace = $1 AND key = $2 AND state = 'in_flight' AND owner_token = $3 \
            AND expires_at > \(now) RETURNING 1
            """
        // The gap after the lease (the claim's retention) is kept: expiry moves with the lease end.
        renew = """
            WITH clock AS (SELECT \(now) AS now), \
            input AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS i(namespace, key, owner_token, n)) \
            UPDATE \(table) AS r SET lease_until = c.now + $4::bigint, \
            expires_at = r.expires_at - r.lease_until + c.now + $4::bigint \
            FROM input i CROSS JOIN clock c WHERE r.namespace = i.namespace AND r.key = i.key AND r.state = 'in_flight' \
            AND r.owner_token = i.owner_token AND r.expires_at > c.now RETURNING i.n, r.lease_until
            """
        read = "SELECT \(now), \(Self.columns) FROM \(table) WHERE namespace = $1 AND key = $2"
    }
}

extension ByteBuffer {
    /// The string's UTF-8 bytes, as the store keeps identities and tokens (`bytea`).
    init(utf8 string: String) {
        self.init(string: string)
    }
}

extension PostgresBindings {
    /// Appends the strings as a `bytea[]` parameter.
    mutating func appendBytes(_ strings: [String]) {
        append(strings.map(ByteBuffer.init(utf8:)))
    }
}
