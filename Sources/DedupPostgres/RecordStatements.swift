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
        // Each a call of the schema's function (Migrations/postgres/0002_claim_function.sql), which
        // runs the one statement of the transition with a plan kept per connection: sent as text,
        // the statement cost the server more to parse and plan than to run, on every call. $10 is
        // lock_timeout in milliseconds, set for the caller's transaction before the upsert.
        let schema = names.quotedSchema
        claim = """
            SELECT * FROM \(schema).dedup_claim($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], \
            $6::bigint[], $7::bytea[], $8::bool[], $9::bigint[], $10::bigint)
            """
        complete = """
            SELECT * FROM \(schema).dedup_complete($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bytea[], \
            $6::bool[])
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
