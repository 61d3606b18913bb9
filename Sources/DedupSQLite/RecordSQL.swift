import CSQLite
import Dedup
import Foundation

/// A record row as stored, times in milliseconds (compared before any conversion to `Date`).
struct StoredRecord {
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

    /// Decodes the columns `state … result, owner_label, broker_ms` (``RecordSQL/columns``) starting at `first`.
    init(_ statement: Statement, first: Int32 = 0) {
        let stateText = sqlite3_column_text(statement.handle, first)
        // The schema allows only these two spellings (CHECK constraint).
        state = stateText.map { $0[0] == UInt8(ascii: "c") } == true ? .completed : .inFlight
        ownerToken = statement.text(first + 1)
        fencing = statement.int64(first + 2)
        attempt = statement.int64(first + 3)
        createdAt = statement.int64(first + 4)
        leaseUntil = statement.optionalInt64(first + 5)
        completedAt = statement.optionalInt64(first + 6)
        expiresAt = statement.int64(first + 7)
        fingerprint = statement.text(first + 8)
        result = statement.blob(first + 9)
        ownerLabel = statement.text(first + 10)
        brokerTime = statement.optionalInt64(first + 11)
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
}

/// The record operations, written once against a connection so the inline path, the worker thread,
/// batches and transactional claims share them.
enum RecordSQL {
    static let columns =
        "state, owner_token, fencing, attempt, created_at, lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms"

    /// The time filters select by (``/Dedup/DedupRecord/selectionTime``): the broker time where the row
    /// carries one, else the record time. No index serves it: a namespace's rows are walked in
    /// primary-key order (see the schema's comment), which a namespace filter keeps to its range.
    static let selectionTime = "coalesce(broker_ms, completed_at, created_at)"

    /// The stored row of `id`, live or not.
    @inline(__always)
    static func read(_ connection: Connection, _ id: RecordID) throws(SQLiteFailure) -> StoredRecord? {
        try connection.with(.select) { statement throws(SQLiteFailure) in
            statement.bind(1, id.namespace)
            statement.bind(2, id.key)
            return try statement.step() ? StoredRecord(statement) : nil
        }
    }

    /// The answer an existing row gives without any write, or `nil` when the claim must write
    /// (absent, not live, or an in-flight lease that has passed).
    @inline(__always)
    static func answerWithoutWrite(_ stored: StoredRecord?, _ request: ClaimRequest, now: Int64) -> ClaimAnswer? {
        guard let stored, stored.expiresAt > now else { return nil }
        if let theirs = stored.fingerprint, let ours = request.fingerprint, theirs != ours {
            return .payloadMismatch(stored.record(request.id))
        }
        switch stored.state {
        case .completed:
            return .duplicate(stored.record(request.id))
        case .inFlight:
            if let leaseUntil = stored.leaseUntil, now < leaseUntil {
                return .inFlight(stored.record(request.id))
            }
            return nil
        }
    }

    /// The atomic upsert; a lease when it acquired, `nil` when the row it found was not acquirable.
    @inline(__always)
    static func upsert(_ connection: Connection, _ request: ClaimRequest, now: Int64) throws(SQLiteFailure) -> Lease? {
        let leaseUntil = now.addingSaturating(request.lease.wholeMilliseconds)
        let expiresAt = leaseUntil.addingSaturating(request.retention.wholeMilliseconds)
        return try connection.with(.upsert) { statement throws(SQLiteFailure) -> Lease? in
            bindUpsert(statement, request, now: now, leaseUntil: leaseUntil, expiresAt: expiresAt)
            guard try statement.step() else { return nil }
            let attempt = statement.int64(1)
            let lease = Lease(
                id: request.id,
                ownerToken: request.ownerToken,
                fencingToken: statement.int64(0),
                attempt: Int(attempt),
                leaseUntil: Date(millisecondsSince1970: leaseUntil),
                // A fresh record always starts at attempt 1; a takeover always increments it.
                isTakeover: attempt > 1,
                claimedAt: Date(millisecondsSince1970: statement.int64(2)),
                ownerLabel: request.ownerLabel
            )
            // Finish the statement so its write is complete before the reset.
            _ = try statement.step()
            return lease
        }
    }

    /// The parameters of both upserts (see ``CachedSQL/upsertInTransaction``).
    @inline(__always)
    private static func bindUpsert(
        _ statement: Statement,
        _ request: ClaimRequest,
        now: Int64,
        leaseUntil: Int64,
        expiresAt: Int64
    ) {
        statement.bind(1, request.id.namespace)
        statement.bind(2, request.id.key)
        statement.bind(3, request.ownerToken)
        statement.bind(4, now)
        statement.bind(5, leaseUntil)
        statement.bind(6, expiresAt)
        statement.bind(7, request.fingerprint)
        statement.bind(8, request.ownerLabel)
        statement.bind(9, request.brokerMilliseconds)
    }

    /// The upsert inside a transaction that has just read `stored`: no other writer can come in
    /// between, so what the upsert sets follows from the read (as the statement's own `CASE`s
    /// decide it), and the statement needs no `RETURNING`. `nil` when it wrote nothing.
    @inline(__always)
    static func upsert(
        _ connection: Connection,
        _ request: ClaimRequest,
        now: Int64,
        over stored: StoredRecord?
    ) throws(SQLiteFailure) -> Lease? {
        let leaseUntil = now.addingSaturating(request.lease.wholeMilliseconds)
        let expiresAt = leaseUntil.addingSaturating(request.retention.wholeMilliseconds)
        let wrote = try connection.with(.upsertInTransaction) { statement throws(SQLiteFailure) -> Bool in
            bindUpsert(statement, request, now: now, leaseUntil: leaseUntil, expiresAt: expiresAt)
            _ = try statement.step()
            return connection.changes == 1
        }
        guard wrote else { return nil }
        // A live row was taken over (its counters go up, its creation time stays); anything else
        // was written fresh.
        let takenOver = stored.flatMap { $0.expiresAt > now ? $0 : nil }
        return Lease(
            id: request.id,
            ownerToken: request.ownerToken,
            fencingToken: takenOver.map { $0.fencing + 1 } ?? 1,
            attempt: Int(takenOver.map { $0.attempt + 1 } ?? 1),
            leaseUntil: Date(millisecondsSince1970: leaseUntil),
            isTakeover: takenOver != nil,
            claimedAt: Date(millisecondsSince1970: takenOver?.createdAt ?? now),
            ownerLabel: request.ownerLabel
        )
    }

    /// One claim. Outside a transaction: a read, then (only if it may acquire) one upsert in
    /// autocommit; if a concurrent writer changed the row in between, it tries again and finally
    /// decides under `BEGIN IMMEDIATE`. Inside a transaction the read and the upsert agree.
    static func claim(
        _ connection: Connection,
        _ request: ClaimRequest,
        now: Int64
    ) throws(SQLiteFailure) -> ClaimAnswer {
        let inTransaction = connection.isInTransaction
        for _ in 0..<2 {
            let stored = try read(connection, request.id)
            if let answer = answerWithoutWrite(stored, request, now: now) {
                return answer
            }
            if inTransaction {
                if let lease = try upsert(connection, request, now: now, over: stored) { return .acquired(lease) }
                break
            }
            if let lease = try upsert(connection, request, now: now) { return .acquired(lease) }
        }
        if inTransaction {
            throw SQLiteFailure(
                code: SQLITE_INTERNAL,
                message: "the claim's read and write disagreed inside one transaction"
            )
        }
        try connection.run(.begin)
        do {
            let answer = try claim(connection, request, now: now)
            try connection.run(.commit)
            return answer
        } catch {
            connection.rollbackIfNeeded()
            throw error
        }
    }

    /// Claims in one `BEGIN IMMEDIATE` transaction, in order.
    static func claim(
        _ connection: Connection,
        batch requests: [ClaimRequest],
        now: Int64
    ) throws(SQLiteFailure) -> [ClaimAnswer] {
        try transaction(connection) { () throws(SQLiteFailure) in
            var answers: [ClaimAnswer] = []
            answers.reserveCapacity(requests.count)
            for request in requests { answers.append(try claim(connection, request, now: now)) }
            return answers
        }
    }

    /// One owner-checked completion statement; `true` when it completed the record.
    @inline(__always)
    static func complete(_ connection: Connection, _ completion: Completion, now: Int64) throws(SQLiteFailure) -> Bool {
        try connection.with(.complete) { statement throws(SQLiteFailure) in
            statement.bind(1, completion.lease.id.namespace)
            statement.bind(2, completion.lease.id.key)
            statement.bind(3, completion.lease.ownerToken)
            statement.bind(4, now)
            statement.bind(5, now.addingSaturating(completion.retention.wholeMilliseconds))
            statement.bind(6, completion.result)
            _ = try statement.step()
            return connection.changes == 1
        }
    }

    static func release(_ connection: Connection, _ lease: Lease, now: Int64) throws(SQLiteFailure) -> Bool {
        try connection.with(.release) { statement throws(SQLiteFailure) in
            statement.bind(1, lease.id.namespace)
            statement.bind(2, lease.id.key)
            statement.bind(3, lease.ownerToken)
            statement.bind(4, now)
            _ = try statement.step()
            return connection.changes == 1
        }
    }

    static func renew(
        _ connection: Connection,
        _ lease: Lease,
        for duration: Duration,
        now: Int64
    ) throws(SQLiteFailure) -> Lease? {
        try connection.with(.renew) { statement throws(SQLiteFailure) -> Lease? in
            statement.bind(1, lease.id.namespace)
            statement.bind(2, lease.id.key)
            statement.bind(3, lease.ownerToken)
            statement.bind(4, now)
            statement.bind(5, now.addingSaturating(duration.wholeMilliseconds))
            guard try statement.step() else { return nil }
            var renewed = lease
            renewed.leaseUntil = Date(millisecondsSince1970: statement.int64(0))
            _ = try statement.step()
            return renewed
        }
    }

    /// Runs `body` in `BEGIN IMMEDIATE` … `COMMIT`, rolling back when it throws.
    static func transaction<R>(
        _ connection: Connection,
        _ body: () throws(SQLiteFailure) -> R
    ) throws(SQLiteFailure) -> R {
        try connection.run(.begin)
        do {
            let value = try body()
            try connection.run(.commit)
            return value
        } catch {
            connection.rollbackIfNeeded()
            throw error
        }
    }

    // MARK: Inspection

    /// SQL conditions for a filter, with `?` placeholders appended to `bindings` in order.
    static func conditions(_ filter: RecordFilter, bindings: inout [SQLiteValue]) -> String {
        var sql = ""
        if let namespace = filter.namespace {
            sql += " AND namespace = ?"
            bindings.append(.text(namespace))
        }
        if let state = filter.state {
            sql += " AND state = ?"
            bindings.append(.text(state.rawValue))
        }
        if let from = filter.from {
            sql += " AND \(selectionTime) >= ?"
            bindings.append(.integer(from.millisecondsSince1970))
        }
        if let until = filter.until {
            sql += " AND \(selectionTime) < ?"
            bindings.append(.integer(until.millisecondsSince1970))
        }
        if let prefix = filter.keyPrefix, !prefix.isEmpty {
            // Compare bytes, not characters: keys may hold any UTF-8, NUL included.
            sql += " AND substr(CAST(key AS BLOB), 1, ?) = ?"
            bindings.append(.integer(Int64(prefix.utf8.count)))
            bindings.append(.blob(Data(prefix.utf8)))
        }
        return sql
    }

    static func page(
        _ connection: Connection,
        _ filter: RecordFilter,
        after cursor: RecordID?,
        limit: Int,
        now: Int64
    ) throws(SQLiteFailure) -> RecordPage {
        var bindings: [SQLiteValue] = [.integer(now)]
        var sql = "SELECT namespace, key, \(columns) FROM dedup_records WHERE expires_at > ?"
        sql += conditions(filter, bindings: &bindings)
        if let cursor {
            if filter.namespace == cursor.namespace {
                // With the namespace fixed, `key > ?` lets SQLite seek in the primary key; the row
                // value comparison would make it rescan the namespace from its start on every page.
                sql += " AND key > ?"
            } else {
                sql += " AND (namespace, key) > (?, ?)"
                bindings.append(.text(cursor.namespace))
            }
            bindings.append(.text(cursor.key))
        }
        sql += " ORDER BY namespace, key LIMIT ?"
        bindings.append(.integer(Int64(limit) + 1))
        let statement = try connection.cachedStatement(sql)
        defer { statement.reset() }
        for (index, value) in bindings.enumerated() { statement.bind(Int32(index + 1), value) }
        var records: [DedupRecord] = []
        var more = false
        while try statement.step() {
            if records.count == limit {
                more = true
                break
            }
            let id = RecordID(uncheckedNamespace: statement.text(0) ?? "", key: statement.text(1) ?? "")
            records.append(StoredRecord(statement, first: 2).record(id))
        }
        let next = more ? records.last.map { PageCursor(token: $0.id.encoded) } : nil
        return RecordPage(records: records, next: next)
    }

    static func delete(
        _ connection: Connection,
        _ ids: [RecordID],
        matching filter: RecordFilter,
        now: Int64
    ) throws(SQLiteFailure) -> Int {
        var filterBindings: [SQLiteValue] = []
        let sql =
            "DELETE FROM dedup_records WHERE namespace = ? AND key = ? AND expires_at > ?"
            + conditions(filter, bindings: &filterBindings)
        return try transaction(connection) { () throws(SQLiteFailure) -> Int in
            let statement = try connection.cachedStatement(sql)
            var deleted = 0
            for id in ids {
                defer { statement.reset() }
                statement.bind(1, id.namespace)
                statement.bind(2, id.key)
                statement.bind(3, now)
                for (index, value) in filterBindings.enumerated() { statement.bind(Int32(index + 4), value) }
                _ = try statement.step()
                deleted += connection.changes
            }
            return deleted
        }
    }

    /// Deletes up to `limit` expired records, walking the primary key from `cursor` (no index on
    /// expiry: the hot path would pay for it). Returns how many it deleted and where to go on from;
    /// `nil` once the walk reached the end of the table.
    static func purge(
        _ connection: Connection,
        limit: Int,
        after cursor: RecordID?,
        now: Int64
    ) throws(SQLiteFailure)
        -> (deleted: Int, next: RecordID?)
    {
        var sql = "SELECT namespace, key FROM dedup_records WHERE expires_at <= ?"
        var bindings: [SQLiteValue] = [.integer(now)]
        if let cursor {
            sql += " AND (namespace, key) > (?, ?)"
            bindings += [.text(cursor.namespace), .text(cursor.key)]
        }
        sql += " ORDER BY namespace, key LIMIT ?"
        bindings.append(.integer(Int64(limit)))
        // The walk reads outside any transaction (WAL readers take no lock), so other writers are
        // held up only by the short deleting transaction, never by the scan.
        let select = try connection.cachedStatement(sql)
        var expired: [RecordID] = []
        do {
            defer { select.reset() }
            for (index, value) in bindings.enumerated() { select.bind(Int32(index + 1), value) }
            while try select.step() {
                expired.append(RecordID(uncheckedNamespace: select.text(0) ?? "", key: select.text(1) ?? ""))
            }
        }
        guard !expired.isEmpty else { return (0, nil) }
        let deleted = try transaction(connection) { () throws(SQLiteFailure) -> Int in
            let delete = try connection.cachedStatement(
                "DELETE FROM dedup_records WHERE namespace = ? AND key = ? AND expires_at <= ?"
            )
            var deleted = 0
            for id in expired {
                defer { delete.reset() }
                delete.bind(1, id.namespace)
                delete.bind(2, id.key)
                delete.bind(3, now)
                _ = try delete.step()
                deleted += connection.changes
            }
            return deleted
        }
        return (deleted, expired.count == limit ? expired.last : nil)
    }

    static func stats(_ connection: Connection, now: Int64) throws(SQLiteFailure) -> DedupStats {
        let statement = try connection.cachedStatement(
            """
            SELECT namespace, sum(state = 'in_flight'), sum(state = 'in_flight' AND lease_until <= ?1), \
            sum(state = 'completed'), min(coalesce(completed_at, created_at)), max(coalesce(completed_at, created_at)), \
            min(broker_ms), max(broker_ms) \
            FROM dedup_records WHERE expires_at > ?1 GROUP BY namespace ORDER BY namespace
            """
        )
        defer { statement.reset() }
        statement.bind(1, now)
        var namespaces: [DedupStats.NamespaceStats] = []
        while try statement.step() {
            namespaces.append(
                DedupStats.NamespaceStats(
                    namespace: statement.text(0) ?? "",
                    inFlight: Int(statement.int64(1)),
                    expiredLeases: Int(statement.int64(2)),
                    completed: Int(statement.int64(3)),
                    oldest: statement.optionalInt64(4).map { Date(millisecondsSince1970: $0) },
                    newest: statement.optionalInt64(5).map { Date(millisecondsSince1970: $0) },
                    oldestBrokerTime: statement.optionalInt64(6).map { Date(millisecondsSince1970: $0) },
                    newestBrokerTime: statement.optionalInt64(7).map { Date(millisecondsSince1970: $0) }
                )
            )
        }
        return DedupStats(namespaces: namespaces)
    }

    /// Records past their expiry, not purged yet, by namespace.
    static func expiredCounts(_ connection: Connection, now: Int64) throws(SQLiteFailure) -> [String: Int] {
        let statement = try connection.cachedStatement(
            "SELECT namespace, count(*) FROM dedup_records WHERE expires_at <= ?1 GROUP BY namespace"
        )
        defer { statement.reset() }
        statement.bind(1, now)
        var counts: [String: Int] = [:]
        while try statement.step() {
            counts[statement.text(0) ?? "", default: 0] += Int(statement.int64(1))
        }
        return counts
    }
}

extension Int64 {
    /// `self + other`, stopping at `Int64.max` (a retention of `.seconds(.max)` means "forever").
    @inline(__always)
    func addingSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
