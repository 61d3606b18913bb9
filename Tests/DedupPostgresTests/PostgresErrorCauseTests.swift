import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import PostgresNIO
import Testing

/// A `DedupError` from the PostgreSQL store keeps the server's SQLSTATE beside its code, on every
/// path a server error takes: migrations, a plain claim, a transactional claim of the store's own
/// and one inside the caller's transaction.
@Suite("PostgreSQL errors keep their SQLSTATE")
struct PostgresErrorCauseTests {
    /// A new login role with no rights beyond PUBLIC's (it may connect, not create schemas).
    static func makeRole() async throws -> String {
        let role = freshSchema("role")
        try await TestDatabase.shared.server().psql("CREATE ROLE \(role) LOGIN PASSWORD 'role-secret'")
        return role
    }

    /// A URL logging in as `role`, for the store in `schema`.
    static func url(role: String, schema: String) async throws -> String {
        let port = try await TestDatabase.shared.server().port
        return "postgres://\(role):role-secret@127.0.0.1:\(port)/postgres?schema=\(schema)"
    }

    static func request(_ key: String) -> ClaimRequest {
        ClaimRequest(id: makeID(key), lease: .seconds(30), retention: .seconds(3600))
    }

    @Test("a role that may not create the schema fails migrating: permissionDenied with SQLSTATE 42501")
    func migrationWithoutRights() async throws {
        let url = try await Self.url(role: try await Self.makeRole(), schema: freshSchema())
        let error = await expectDedupError(.permissionDenied) {
            try await PostgresDedupStore(url: url, configuration: .forTests, logger: quietLogger)
        }
        #expect(error?.postgresSQLState == "42501", "\(String(describing: error))")
        #expect(error?.underlyingError is PSQLError, "the server's error is still the cause")
    }

    @Test("a role that may read the dedup tables but not write them: every claim is permissionDenied with 42501")
    func claimsWithoutWriteRights() async throws {
        let owner = try await makeStore()
        let schema = owner.configuration.schema
        let role = try await Self.makeRole()
        try await TestDatabase.shared.server().psql(
            "GRANT USAGE ON SCHEMA \"\(schema)\" TO \(role); GRANT SELECT ON ALL TABLES IN SCHEMA \"\(schema)\" TO \(role)"
        )
        let store = try await PostgresDedupStore(
            url: try await Self.url(role: role, schema: schema),
            configuration: .forTests,
            logger: quietLogger
        )
        defer { store.close() }

        let plain = await expectDedupError(.permissionDenied) { try await store.claim(Self.request("plain")) }
        #expect(plain?.postgresSQLState == "42501", "\(String(describing: plain))")

        let transactional = await expectDedupError(.permissionDenied) {
            try await store.withTransactionalClaim(Self.request("own"), retention: .seconds(3600)) { _, _ in
                Issue.record("a refused claim must not run its handler")
                return nil
            }
        }
        #expect(transactional?.postgresSQLState == "42501", "\(String(describing: transactional))")

        // The caller's transaction, run as the role: the owner's client, `SET LOCAL ROLE`.
        let client = try await TestDatabase.shared.client()
        let inCallers = try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: quietLogger)
            try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL ROLE \(role)"), logger: quietLogger)
            let error = await expectDedupError(.permissionDenied) {
                try await owner.withTransactionalClaim(
                    Self.request("callers"),
                    retention: .seconds(3600),
                    in: connection
                ) {
                    _,
                    _ in
                    Issue.record("a refused claim must not run its handler")
                    return nil
                }
            }
            try await connection.query("ROLLBACK", logger: quietLogger)
            return error
        }
        #expect(inCallers?.postgresSQLState == "42501", "\(String(describing: inCallers))")
        for key in ["plain", "own", "callers"] {
            #expect(try await owner.record(for: makeID(key)) == nil, "nothing was written for \(key)")
        }
    }
}
