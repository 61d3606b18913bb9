import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Testing

/// The built `dedup-inspect` on a PostgreSQL store: migrate, check, stats, show and purge, and no
/// password in anything it prints.
@Suite("dedup-inspect on PostgreSQL")
struct PostgresInspectTests {
    func inspect(_ arguments: [String]) async throws -> DedupTestSupport.ProcessResult {
        try await runProcess(try BuiltExecutables.path("dedup-inspect"), arguments)
    }

    @Test(
        "migrate creates the schema, check reports it current, stats and show read records, purge deletes expired ones"
    )
    func commands() async throws {
        let server = try await TestDatabase.shared.server()
        let schema = freshSchema("inspect")
        let url = server.url + "?schema=\(schema)"

        let before = try await inspect(["stats", "--store", url])
        #expect(before.status != 0, "an inspection never creates the schema: \(before.output)")
        #expect(before.errors.contains("schemaOutdated") || before.errors.contains("version 0"), "\(before.errors)")

        let migrate = try await inspect(["migrate", "--store", url])
        #expect(migrate.status == 0, "\(migrate.errors)")
        let check = try await inspect(["check", "--store", url, "--format", "json"])
        #expect(check.status == 0, "\(check.errors)")
        #expect(check.output.contains("\"current\""), "\(check.output)")

        let store = try await makeStore(schema: schema)
        guard
            case .acquired(let lease) = try await store.claim(
                ClaimRequest(id: makeID("o-7"), lease: .seconds(30), retention: .seconds(3600))
            )
        else {
            throw ConformanceStyleFailure("claim did not acquire")
        }
        try await store.complete(Completion(lease: lease, retention: .milliseconds(1)))
        _ = try await store.claim(ClaimRequest(id: makeID("o-8"), lease: .seconds(30), retention: .seconds(3600)))

        let stats = try await inspect(["stats", "--store", url, "--format", "json"])
        #expect(stats.status == 0, "\(stats.errors)")
        #expect(stats.output.contains("orders"), "\(stats.output)")
        let show = try await inspect(["show", "--store", url, "--namespace", "orders", "o-8", "--format", "json"])
        #expect(show.status == 0 && show.output.contains("in_flight"), "\(show.output) \(show.errors)")
        let purge = try await inspect(["purge", "--store", url, "--yes", "--format", "json"])
        #expect(purge.status == 0, "\(purge.errors)")
        #expect(try await store.record(for: makeID("o-8")) != nil)
        #expect(
            try await server.psql("SELECT count(*) FROM \"\(schema)\".dedup_records") == "1",
            "the expired completion was purged"
        )
    }

    @Test("a wrong password fails as authentication, and the password appears nowhere in the output")
    func wrongPassword() async throws {
        let server = try await TestDatabase.shared.server()
        let run = try await inspect(["stats", "--store", server.url(password: "hunter2-wrong"), "--format", "json"])
        #expect(run.status != 0)
        #expect(
            run.errors.contains("authenticationFailed") || run.output.contains("authenticationFailed"),
            "\(run.errors) \(run.output)"
        )
        #expect(!(run.output + run.errors).contains("hunter2-wrong"))
    }
}
