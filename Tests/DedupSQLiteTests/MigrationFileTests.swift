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
                "EmbeddedMigrations.swift differs from Migrations/sqlite/\(name): copy the file's text into it")
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
}
