import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import PostgresNIO
import Testing

/// Failures to reach or log in to the server are typed, keep postgres-nio's error as the cause,
/// and never show the password.
@Suite("PostgreSQL connection failures")
struct ConnectionFailureTests {
    @Test("a wrong password is authenticationFailed (not unreachable), with the server's error as the cause")
    func wrongPassword() async throws {
        let server = try await TestDatabase.shared.server()
        let error = await expectDedupError(.authenticationFailed) {
            try await PostgresDedupStore(url: server.url(password: "not-the-password"), logger: quietLogger)
        }
        #expect(error?.isStoreUnreachable == false)
        #expect(error?.underlyingError is PSQLError)
        #expect(error?.postgresSQLState == "28P01", "invalid_password")
        #expect(error?.message.contains("not-the-password") == false)
    }

    @Test("a port where no server listens is storeUnavailable")
    func nothingListening() async throws {
        let url = "postgres://dedup:secret@127.0.0.1:1/postgres"
        let error = await expectDedupError(.storeUnavailable) {
            try await PostgresDedupStore(url: url, logger: quietLogger)
        }
        #expect(error?.message.contains("secret") == false)
        #expect(error?.postgresSQLState == nil, "no server sent an error")
    }

    @Test("a URL that is not PostgreSQL's, or has an unknown option, is invalidConfiguration without the password")
    func badURLs() async throws {
        for url in [
            "redis://u:pw-123@h/0", "postgres://u:pw-123@h/db?sslmode=sometimes",
            "postgres://u:pw-123@h/db?colour=blue", "postgres://h/db",
        ] {
            let error = await expectDedupError(.invalidConfiguration) { try PostgresURL(url) }
            #expect(error?.message.contains("pw-123") == false, "\(url)")
        }
        let parsed = try PostgresURL("postgresql://app:p%40ss@db.example:6543/orders?sslmode=disable&schema=dedup")
        #expect(parsed.clientConfiguration.username == "app")
        #expect(parsed.clientConfiguration.password == "p@ss")
        #expect(parsed.clientConfiguration.database == "orders")
        #expect(parsed.schema == "dedup")
    }
}
