import CSQLite
import Dedup
import Foundation
import Testing

@testable import DedupSQLite

/// Schema 3 adds `broker_ms`: files at schema 2 migrate with every row intact, and selecting by
/// broker time walks a namespace's range of the primary key, as selecting by record time did.
@Suite("SQLite broker time schema")
struct BrokerTimeMigrationTests {
    @Test(
        "a schema-2 file migrates to 3: its rows read unchanged without a broker time, new claims keep one, filters fall back to record time"
    )
    func schemaTwoFileMigrates() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        var sql =
            "CREATE TABLE dedup_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL);\n"
        for migration in SQLiteMigration.all.prefix(2) {
            sql += migration.sql
            sql +=
                "INSERT INTO dedup_schema_migrations VALUES (\(migration.version), '\(migration.name)', '\(migration.checksum)', 0);\n"
        }
        let far: Int64 = 253_402_300_799_000
        sql += """
            INSERT INTO dedup_records (namespace, key, state, owner_token, fencing, attempt, created_at, lease_until, completed_at, expires_at, fingerprint, result, owner_label)
            VALUES ('orders', 'done', 'completed', NULL, 2, 2, 1000, NULL, 5000, \(far), 'fp', X'6F6B', NULL),
                   ('orders', 'held', 'in_flight', 'token-1', 1, 1, 7000, \(far - 1), NULL, \(far), NULL, NULL, 'pod-1');
            """
        try rawSQL(path, sql)
        #expect(try SQLiteDedupStore.schemaStatus(path: path).currentVersion == 2)

        let store = try SQLiteDedupStore(path: path, logger: quietLogger)
        #expect(try SQLiteDedupStore.schemaStatus(path: path).currentVersion == 3)
        let done = try #require(try await store.record(for: makeID("done")))
        #expect(done.state == .completed && done.fencingToken == 2 && done.attempt == 2 && done.fingerprint == "fp")
        #expect(done.result == Data("ok".utf8) && done.createdAt == Date(millisecondsSince1970: 1000))
        #expect(done.completedAt == Date(millisecondsSince1970: 5000) && done.brokerTime == nil)
        let held = try #require(try await store.record(for: makeID("held")))
        #expect(held.ownerToken == "token-1" && held.ownerLabel == "pod-1" && held.brokerTime == nil)

        let published = Date(millisecondsSince1970: 3000)
        var claim = request("new")
        claim.brokerTime = published
        _ = try #require(try await store.claim(claim).lease)
        #expect(try await store.record(for: makeID("new"))?.brokerTime == published)
        // [2000, 6000): "done" by its record time (5000), "new" by its broker time; "held" (7000) and
        // "new"'s record time (now) are outside.
        let page = try await store.records(
            matching: RecordFilter(
                namespace: "orders",
                from: Date(millisecondsSince1970: 2000),
                until: Date(millisecondsSince1970: 6000)
            ),
            after: nil,
            limit: 10
        )
        #expect(page.records.map(\.id.key) == ["done", "new"])
    }

    @Test("listing and deleting a namespace by time search the primary key's namespace range, not the whole table")
    func timeFilterUsesThePrimaryKey() throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        _ = try SQLiteDedupStore(path: path, logger: quietLogger)
        var bindings: [SQLiteValue] = []
        let filter = RecordFilter(
            namespace: "orders",
            from: Date(millisecondsSince1970: 1),
            until: Date(millisecondsSince1970: 2)
        )
        let conditions = RecordSQL.conditions(filter, bindings: &bindings)
        #expect(conditions.contains(RecordSQL.selectionTime))
        let list = try queryPlan(
            path,
            "SELECT namespace, key FROM dedup_records WHERE expires_at > 0\(conditions) ORDER BY namespace, key LIMIT 10"
        )
        #expect(list.contains { $0.contains("USING PRIMARY KEY (namespace=?)") }, "plan: \(list)")
        #expect(!list.contains { $0.hasPrefix("SCAN") || $0.contains("TEMP B-TREE") }, "plan: \(list)")
        let delete = try queryPlan(
            path,
            "DELETE FROM dedup_records WHERE namespace = ? AND key = ? AND expires_at > 0\(conditions)"
        )
        #expect(delete.contains { $0.contains("USING PRIMARY KEY (namespace=? AND key=?)") }, "plan: \(delete)")
    }

    /// The `detail` lines of `EXPLAIN QUERY PLAN` for `sql`.
    private func queryPlan(_ path: String, _ sql: String) throws -> [String] {
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK else { throw DedupError(.storeError, "raw open failed") }
        defer { sqlite3_close(db) }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN " + sql, -1, &statement, nil) == SQLITE_OK else {
            throw DedupError(.storeError, String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(statement) }
        var details: [String] = []
        while sqlite3_step(statement) == SQLITE_ROW {
            details.append(String(cString: sqlite3_column_text(statement, 3)))
        }
        return details
    }
}
