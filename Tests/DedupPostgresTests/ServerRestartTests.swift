import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import PostgresNIO
import Testing

/// A server that goes away mid-run: calls fail typed, and the same store and client work again
/// once it is back, with every committed record kept.
@Suite("PostgreSQL server restarted mid-run")
struct ServerRestartTests {
    @Test("calls fail as unreachable while the server is down, then recover with the same client")
    func restartMidRun() async throws {
        let server = try await PostgresServer.start()
        do {
            try await check(server)
            await server.stop()
        } catch {
            await server.stop()
            throw error
        }
    }

    private func check(_ server: PostgresServer) async throws {
        let client = PostgresClient(configuration: clientConfiguration(server))
        let run = Task { await client.run() }
        defer { run.cancel() }
        // Setting up may be slow on a busy machine; the calls while the server is down are the ones
        // that must give up soon, through a second store object on the same client.
        let setup = try await PostgresDedupStore(
            client: client,
            configuration: .init(timeout: .seconds(60)),
            logger: quietLogger
        )
        let store = try await PostgresDedupStore(
            client: client,
            configuration: .init(timeout: .seconds(2)),
            logger: quietLogger
        )
        _ = setup
        let before = makeID("before-crash")
        guard
            case .acquired(let lease) = try await store.claim(
                ClaimRequest(id: before, lease: .seconds(30), retention: .seconds(3600))
            )
        else {
            throw ConformanceStyleFailure("the first claim did not acquire")
        }
        try await store.complete(Completion(lease: lease, retention: .seconds(3600)))

        await server.crash()
        for key in ["while-down-1", "while-down-2"] {
            do {
                _ = try await store.claim(ClaimRequest(id: makeID(key), lease: .seconds(30), retention: .seconds(3600)))
                Issue.record("a claim succeeded while the server was down")
            } catch let error as DedupError {
                #expect(error.isStoreUnreachable, "\(error)")
            }
        }

        try await server.restart()
        // The pool reconnects by itself; until it has, calls keep failing as unreachable.
        let deadline = ContinuousClock.now + .seconds(60)
        var recovered: ClaimAnswer?
        while recovered == nil && ContinuousClock.now < deadline {
            do {
                recovered = try await store.claim(
                    ClaimRequest(id: makeID("after-restart"), lease: .seconds(30), retention: .seconds(3600))
                )
            } catch let error as DedupError where error.isStoreUnreachable {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        guard case .acquired = recovered else {
            throw ConformanceStyleFailure("no recovery within 60 s: \(String(describing: recovered))")
        }
        #expect(
            try await store.record(for: before)?.state == .completed,
            "the completion committed before the crash is kept"
        )
    }
}
