import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Testing

/// The migrations ship embedded in Swift (EmbeddedMigrations.swift); Migrations/postgres/ holds the
/// canonical files. Opening applies them once, under an advisory lock, and refuses a schema it did
/// not write.
@Suite("PostgreSQL migrations")
struct MigrationTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Migrations/postgres")

    @Test("every file in Migrations/postgres is embedded byte for byte, and nothing else is")
    func embeddedEqualsFiles() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(!names.isEmpty)
        #expect(names.map { "\($0.dropLast(4))" } == PostgresMigration.all.map(\.description))
        for (name, migration) in zip(names, PostgresMigration.all) {
            let file = try Data(contentsOf: Self.directory.appendingPathComponent(name))
            #expect(
                file == Data(migration.sql.utf8),
                "EmbeddedMigrations.swift differs from Migrations/postgres/\(name): copy the file's text into it"
            )
        }
        #expect(PostgresMigration.all.map(\.version) == Array(1...PostgresMigration.all.count))
    }

    @Test("opening applies every migration once and records it with its checksum")
    func appliesAndRecords() async throws {
        let store = try await makeStore()
        let status = try await store.schemaStatus()
        #expect(status.currentVersion == PostgresMigration.latestVersion)
        #expect(status.pending.isEmpty)
        #expect(status.applied.map(\.checksum) == PostgresMigration.all.map(\.checksum))
        #expect(status.applied.allSatisfy { $0.status == .matches })
        #expect(status.isHealthy)
    }

    @Test("eight processes' worth of stores opening one new schema at once apply each migration exactly once")
    func concurrentOpeners() async throws {
        let schema = freshSchema("race")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
                group.addTask { _ = try await makeStore(schema: schema, client: index % 2) }
            }
            try await group.waitForAll()
        }
        let server = try await TestDatabase.shared.server()
        let rows = try await server.psql("SELECT count(*) FROM \"\(schema)\".dedup_schema_migrations")
        #expect(rows == String(PostgresMigration.all.count))
    }

    @Test("a schema at version 1 is brought to the latest version on open, and its records keep their answers")
    func upgradesFromVersionOne() async throws {
        let schema = freshSchema("v1")
        let server = try await TestDatabase.shared.server()
        let first = try #require(PostgresMigration.all.first)
        // A schema as the first release left it: version 1 applied, one key completed, one in flight.
        try await server.psql(
            """
            CREATE SCHEMA "\(schema)"; SET search_path = "\(schema)"; \(first.sql)
            CREATE TABLE dedup_schema_migrations (version bigint PRIMARY KEY, name text NOT NULL,
                checksum text NOT NULL, applied_at bigint NOT NULL);
            INSERT INTO dedup_schema_migrations VALUES (1, '\(first.name)', '\(first.checksum)', 0);
            INSERT INTO dedup_records (namespace, key, state, fencing, attempt, created_at, completed_at, expires_at)
                VALUES ('orders', 'done', 'completed', 1, 1, 0, 0, 9000000000000);
            INSERT INTO dedup_records (namespace, key, state, owner_token, fencing, attempt, created_at, lease_until,
                expires_at) VALUES ('orders', 'busy', 'in_flight', 'w1', 4, 4, 0, 9000000000000, 9000000000000);
            """
        )
        let store = try await makeStore(schema: schema)
        let status = try await store.schemaStatus()
        #expect(status.currentVersion == PostgresMigration.latestVersion)
        #expect(status.applied.map(\.version) == PostgresMigration.all.map(\.version))
        let request = { (key: String) in ClaimRequest(id: makeID(key), lease: .seconds(30), retention: .seconds(60)) }
        let answers = try await store.claim(batch: [request("done"), request("busy"), request("new")])
        guard case .duplicate = answers[0], case .inFlight(let busy) = answers[1],
            case .acquired(let lease) = answers[2]
        else {
            Issue.record("unexpected answers \(answers)")
            return
        }
        #expect(busy.fencingToken == 4)
        try await store.complete(Completion(lease: lease, retention: .seconds(60)))
        guard case .duplicate = try await store.claim(request("new")) else {
            Issue.record("the completed key was not a duplicate")
            return
        }
    }

    @Test("a schema from a newer swift-dedup is refused with schemaTooNew, and left as it was")
    func newerSchemaRefused() async throws {
        let schema = freshSchema("newer")
        _ = try await makeStore(schema: schema)
        let server = try await TestDatabase.shared.server()
        try await server.psql(
            "INSERT INTO \"\(schema)\".dedup_schema_migrations VALUES (999, 'from_the_future', 'fnv1a64:0000000000000000', 0)"
        )
        let error = await expectDedupError(.schemaTooNew) { try await makeStore(schema: schema) }
        #expect(error?.message.contains("999") == true)
        #expect(
            try await server.psql("SELECT count(*) FROM \"\(schema)\".dedup_schema_migrations")
                == String(PostgresMigration.all.count + 1)
        )
    }

    @Test("an applied migration whose text was changed is refused with schemaAltered")
    func alteredSchemaRefused() async throws {
        let schema = freshSchema("altered")
        _ = try await makeStore(schema: schema)
        let server = try await TestDatabase.shared.server()
        try await server.psql(
            "UPDATE \"\(schema)\".dedup_schema_migrations SET checksum = 'fnv1a64:0123456789abcdef' WHERE version = 1"
        )
        await expectDedupError(.schemaAltered) { try await makeStore(schema: schema) }
    }
}
