import Dedup
import DedupSQLite
import Foundation
import Testing

/// The migrations ship embedded in Swift (EmbeddedMigrations.swift); Migrations/sqlite/ holds the
/// canonical files. These tests keep the two from drifting apart.
@Suite("SQLite migration files")
struct MigrationFileTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Migrations/sqlite")

    @Test("every file in Migrations/sqlite is embedded byte for byte, and nothing else is")
    func embeddedEqualsFiles() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(!names.isEmpty)
        #expect(names.map { "\($0.dropLast(4))" } == SQLiteMigration.all.map(\.description))
        for (name, migration) in zip(names, SQLiteMigration.all) {
            let file = try Data(contentsOf: Self.directory.appendingPathComponent(name))
            #expect(
                file == Data(migration.sql.utf8),
                "EmbeddedMigrations.swift differs from Migrations/sqlite/\(name): copy the file's text into it"
            )
        }
    }

    @Test("versions run 1, 2, … without gaps")
    func versionsAreContiguous() {
        #expect(SQLiteMigration.all.map(\.version) == Array(1...SQLiteMigration.all.count))
        #expect(SQLiteMigration.latestVersion == SQLiteMigration.all.count)
    }

    @Test("the checksum is FNV-1a 64 of the UTF-8 text")
    func checksum() {
        // Reference values of FNV-1a 64.
        #expect(SQLiteMigration.checksum(of: "") == "fnv1a64:cbf29ce484222325")
        #expect(SQLiteMigration.checksum(of: "a") == "fnv1a64:af63dc4c8601ec8c")
        #expect(SQLiteMigration.checksum(of: "foobar") == "fnv1a64:85944171f73967e8")
    }

    @Test(
        "a version-1 file with a claim in flight migrates: the claim reads without an owner label, a takeover labels it"
    )
    func ownerLabelMigration() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        let first = try #require(SQLiteMigration.all.first)
        try rawSQL(
            path,
            """
            CREATE TABLE dedup_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL);
            \(first.sql)
            INSERT INTO dedup_schema_migrations VALUES (1, '\(first.name)', '\(first.checksum)', 0);
            INSERT INTO dedup_records (namespace, key, state, owner_token, fencing, attempt, created_at, lease_until, completed_at, expires_at)
            VALUES ('orders', 'abandoned', 'in_flight', 'old-token', 1, 1, 1000, 2000, NULL, 253402300799000);
            """
        )
        #expect(try SQLiteDedupStore.schemaStatus(path: path).currentVersion == 1)

        let store = try SQLiteDedupStore(path: path, logger: quietLogger)
        #expect(try SQLiteDedupStore.schemaStatus(path: path).currentVersion == SQLiteMigration.latestVersion)
        let id = makeID("abandoned")
        let old = try #require(try await store.record(for: id))
        #expect(old.ownerToken == "old-token")
        #expect(old.ownerLabel == nil)
        let answer = try await store.claim(
            ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-new")
        )
        let lease = try #require(answer.lease)
        #expect(lease.isTakeover)
        #expect(lease.ownerLabel == "pod-new")
        #expect(try await store.record(for: id)?.ownerLabel == "pod-new")
    }
}
