import Dedup
import Foundation
import PostgresNIO
import Synchronization

extension PostgresDedupStore {
    /// The live record of `id`, or `nil`.
    public func record(for id: RecordID) async throws -> DedupRecord? {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(ByteBuffer(utf8: id.namespace))
        bindings.append(ByteBuffer(utf8: id.key))
        guard let row = try await rows(PostgresQuery(unsafeSQL: statements.read, binds: bindings), "read").first else {
            return nil
        }
        let access = row.makeRandomAccess()
        let now = try access[0].decode(Int64.self)
        guard let stored = try StoredRecord(access, first: 1), stored.expiresAt > now else { return nil }
        return stored.record(id)
    }

    /// A page in (namespace, key) byte order, walking the primary key.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage
    {
        guard limit > 0 else { return RecordPage(records: [], next: nil) }
        var conditions = FilterSQL()
        if let cursor {
            guard let id = RecordID(encoded: Substring(cursor.token)) else {
                throw DedupError(
                    .invalidConfiguration,
                    "the page cursor \(cursor.token.debugDescription) was not made by this store"
                )
            }
            conditions.add("(namespace, key) > (\(conditions.bytes(id.namespace)), \(conditions.bytes(id.key)))")
        }
        conditions.add(filter)
        let limitParameter = conditions.value(Int64(limit) + 1)
        let sql = """
            SELECT namespace, key, \(RecordStatements.columns) FROM \(statements.table) \
            WHERE expires_at > \(RecordStatements.now)\(conditions.sql) ORDER BY namespace, key LIMIT \(limitParameter)
            """
        let rows = try await rows(PostgresQuery(unsafeSQL: sql, binds: conditions.bindings), "list")
        var records: [DedupRecord] = []
        for row in rows.prefix(limit) {
            let access = row.makeRandomAccess()
            let id = RecordID(
                uncheckedNamespace: String(buffer: try access[0].decode(ByteBuffer.self)),
                key: String(buffer: try access[1].decode(ByteBuffer.self))
            )
            if let stored = try StoredRecord(access, first: 2) { records.append(stored.record(id)) }
        }
        let next = rows.count > limit ? records.last.map { PageCursor(token: $0.id.encoded) } : nil
        return RecordPage(records: records, next: next)
    }

    /// Deletes in one statement those of `ids` whose live record still matches `filter`.
    public func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        if ids.isEmpty { return 0 }
        var conditions = FilterSQL()
        let namespaces = conditions.value(ids.map { ByteBuffer(utf8: $0.namespace) })
        let keys = conditions.value(ids.map { ByteBuffer(utf8: $0.key) })
        conditions.add(filter)
        let sql = """
            DELETE FROM \(statements.table) AS r USING (SELECT DISTINCT * FROM unnest(\(namespaces)::bytea[], \(keys)::bytea[]) \
            AS i(ns, k)) AS i WHERE r.namespace = i.ns AND r.key = i.k \
            AND r.expires_at > \(RecordStatements.now)\(conditions.sql) RETURNING 1
            """
        return try await rows(PostgresQuery(unsafeSQL: sql, binds: conditions.bindings), "delete").count
    }

    /// Deletes up to `limit` expired records in one statement, walking the primary key on from
    /// where the previous call stopped (no expiry index for the hot path to maintain); a call that
    /// deletes fewer than `limit` has reached the end of the table. Rows locked by others are skipped.
    public func purgeExpired(limit: Int) async throws -> Int {
        guard limit > 0 else { return 0 }
        var conditions = FilterSQL()
        if let cursor = purgeCursor.withLock({ $0 }) {
            conditions.add(
                "(namespace, key) > (\(conditions.bytes(cursor.namespace)), \(conditions.bytes(cursor.key)))"
            )
        }
        let limitParameter = conditions.value(Int64(limit))
        let table = statements.table
        let sql = """
            WITH doomed AS (SELECT namespace, key FROM \(table) WHERE expires_at <= \(RecordStatements.now)\(conditions.sql) \
            ORDER BY namespace, key LIMIT \(limitParameter) FOR UPDATE SKIP LOCKED) \
            DELETE FROM \(table) AS r USING doomed d WHERE r.namespace = d.namespace AND r.key = d.key \
            RETURNING r.namespace, r.key
            """
        let rows = try await rows(PostgresQuery(unsafeSQL: sql, binds: conditions.bindings), "purge")
        var last: RecordID?
        for row in rows {
            let (namespace, key) = try row.decode((ByteBuffer, ByteBuffer).self)
            let id = RecordID(uncheckedNamespace: String(buffer: namespace), key: String(buffer: key))
            if last.map({ $0 < id }) ?? true { last = id }
        }
        purgeCursor.withLock { $0 = rows.count == limit ? last : nil }
        return rows.count
    }

    /// Counts live records by namespace (one scan).
    public func stats() async throws -> DedupStats {
        let now = RecordStatements.now
        let sql = """
            WITH clock AS (SELECT \(now) AS now) \
            SELECT namespace, count(*) FILTER (WHERE state = 'in_flight'), \
            count(*) FILTER (WHERE state = 'in_flight' AND lease_until <= c.now), count(*) FILTER (WHERE state = 'completed'), \
            min(coalesce(completed_at, created_at)), max(coalesce(completed_at, created_at)), min(broker_ms), max(broker_ms) \
            FROM \(statements.table) CROSS JOIN clock c WHERE expires_at > c.now GROUP BY namespace ORDER BY namespace
            """
        return DedupStats(
            namespaces: try await rows(PostgresQuery(unsafeSQL: sql), "stats").map { row in
                let (namespace, inFlight, expiredLeases, completed, oldest, newest, oldestBroker, newestBroker) =
                    try row.decode(
                        (ByteBuffer, Int64, Int64, Int64, Int64?, Int64?, Int64?, Int64?).self
                    )
                return DedupStats.NamespaceStats(
                    namespace: String(buffer: namespace),
                    inFlight: Int(inFlight),
                    expiredLeases: Int(expiredLeases),
                    completed: Int(completed),
                    oldest: oldest.map(Date.init(millisecondsSince1970:)),
                    newest: newest.map(Date.init(millisecondsSince1970:)),
                    oldestBrokerTime: oldestBroker.map(Date.init(millisecondsSince1970:)),
                    newestBrokerTime: newestBroker.map(Date.init(millisecondsSince1970:))
                )
            }
        )
    }

    /// How many records are past their expiry but not deleted yet (what ``purgeExpired(limit:)``
    /// would delete), by namespace.
    public func expiredCounts() async throws -> [String: Int] {
        let sql = """
            SELECT namespace, count(*) FROM \(statements.table) WHERE expires_at <= \(RecordStatements.now) GROUP BY namespace
            """
        var counts: [String: Int] = [:]
        for row in try await rows(PostgresQuery(unsafeSQL: sql), "count expired") {
            let (namespace, count) = try row.decode((ByteBuffer, Int64).self)
            counts[String(buffer: namespace), default: 0] += Int(count)
        }
        return counts
    }
}

/// SQL conditions with numbered parameters, built up in order.
struct FilterSQL {
    private(set) var sql = ""
    private(set) var bindings = PostgresBindings()

    /// Adds a parameter and returns its placeholder (`$n`).
    mutating func value<Value: PostgresDynamicTypeEncodable>(_ value: Value) -> String {
        bindings.append(value)
        return "$\(bindings.count)"
    }

    /// Adds a string's bytes as a `bytea` parameter and returns its placeholder.
    mutating func bytes(_ text: String) -> String {
        value(ByteBuffer(utf8: text))
    }

    /// Adds a condition: ` AND condition`.
    mutating func add(_ condition: String) {
        sql += " AND " + condition
    }

    /// Adds the conditions of a record filter.
    mutating func add(_ filter: RecordFilter) {
        if let namespace = filter.namespace { add("namespace = \(bytes(namespace))") }
        if let state = filter.state { add("state = \(value(state.rawValue))") }
        if let from = filter.from { add("\(RecordStatements.selectionTime) >= \(value(from.millisecondsSince1970))") }
        if let until = filter.until { add("\(RecordStatements.selectionTime) < \(value(until.millisecondsSince1970))") }
        if let prefix = filter.keyPrefix, !prefix.isEmpty {
            // Bytes, not characters: `%`, `_` and the like are no patterns.
            add("substring(key FROM 1 FOR \(value(Int32(prefix.utf8.count)))) = \(bytes(prefix))")
        }
    }
}
