import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Testing

/// `Configuration.timeout` bounds every call of the store, including one the server keeps waiting:
/// the caller gets `timeout` at the deadline, whatever postgres-nio does with the statement.
@Suite("PostgreSQL call timeout", .timeLimit(.minutes(2)))
struct CallTimeoutTimingTests {
    @Test("a statement waiting on another transaction's row lock returns timeout at the call's deadline")
    func waitOnARowLockEndsAtTheDeadline() async throws {
        // A delete sets no lock_timeout of its own: only the call timeout can end its wait.
        // Migrated under the tests' own timeout; only the delete below runs under the 1 s one.
        let setup = try await makeStore()
        let store = try await makeStore(schema: setup.configuration.schema, configuration: .init(timeout: .seconds(1)))
        let id = makeID("held")
        // A committed row whose lease passes at once: the holder's transactional claim takes it
        // over and keeps it locked (an uncommitted new row would be invisible to the delete).
        _ = try await store.claim(ClaimRequest(id: id, lease: .milliseconds(1), retention: .seconds(3600)))
        try await Task.sleep(for: .milliseconds(50))  // the server's clock passing the lease
        let (holder, release) = await TransactionalTests.holdRow(of: id, in: store, effect: nil)
        let started = ContinuousClock.now
        let error = await expectDedupError(.timeout) { _ = try await store.forget(id) }
        let waited = ContinuousClock.now - started
        #expect(waited < .seconds(10), "the call returned after \(waited), not at its 1 s deadline")
        #expect(error?.message.contains("1.0 seconds") == true, "\(error?.message ?? "")")
        release.yield()
        guard case .committed = try await holder.value else {
            throw ConformanceStyleFailure("the holder did not commit")
        }
    }
}
