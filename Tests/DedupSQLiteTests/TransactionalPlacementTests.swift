import Dedup
import DedupTestKit
import DedupTestSupport
import Foundation
import Synchronization
import Testing

@testable import DedupSQLite

@Suite("SQLite transactional claims: where the transaction runs")
struct TransactionalPlacementTests {
    /// Where each handler run went, by key: on the store's worker thread or not.
    final class Placements: Sendable {
        enum Place: Sendable, Equatable { case workerThread, callingTask }
        private let workerThread: pthread_t
        private let places = Mutex<[String: [Place]]>([:])

        init(workerThreadOf store: SQLiteDedupStore) async throws {
            workerThread = try await store.onWorker("thread") { _ in pthread_self() }
        }

        func ran(_ key: String) {
            let place: Place = pthread_equal(pthread_self(), workerThread) != 0 ? .workerThread : .callingTask
            places.withLock { $0[key, default: []].append(place) }
        }

        subscript(key: String) -> [Place] { places.withLock { $0[key] ?? [] } }
    }

    func claim(_ store: SQLiteDedupStore, _ key: String, _ placements: Placements) async throws -> TransactionalOutcome
    {
        try await store.withTransactionalClaim(request(key), retention: .seconds(3600)) { tx, lease in
            placements.ran(key)
            try tx.execute("INSERT INTO effects (key, fencing) VALUES (?, ?)", .text(key), .integer(lease.fencingToken))
            return Data(key.utf8)
        }
    }

    @Test(
        "with the write lock free the transaction runs inline; while another store holds it, on the worker thread once freed"
    )
    func inlineWhenFreeOnWorkerWhenBusy() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        let other = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        try await other.onWorker("setup") { connection in
            try connection.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, fencing INTEGER NOT NULL)")
        }
        let placements = try await Placements(workerThreadOf: store)

        let inline = try await claim(store, "free", placements)
        #expect(inline == .committed(try #require(inline.lease), result: Data("free".utf8)))
        #expect(placements["free"] == [.callingTask])
        #expect(store.busyHandoffs.load(ordering: .relaxed) == 0)

        // The other store's worker connection takes the write lock and keeps it between its jobs.
        try await other.onWorker("hold the write lock") { connection in try connection.run(.begin) }
        let handed = Task { try await claim(store, "held", placements) }
        let deadline = ContinuousClock.now + .seconds(10)
        while store.busyHandoffs.load(ordering: .relaxed) == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(store.busyHandoffs.load(ordering: .relaxed) == 1, "the transaction never met the busy lock inline")
        #expect(placements["held"].isEmpty, "the handler ran while another connection held the write lock")
        try await other.onWorker("free the write lock") { connection in try connection.run(.commit) }
        let outcome = try await handed.value
        #expect(outcome == .committed(try #require(outcome.lease), result: Data("held".utf8)))
        #expect(placements["held"] == [.workerThread])

        let effects = try await other.onWorker("read") { connection in
            try connection.texts("SELECT key || '=' || fencing FROM effects ORDER BY key")
        }
        #expect(effects == ["free=1", "held=1"])
        for key in ["free", "held"] {
            let record = try #require(try await other.record(for: makeID(key)))
            #expect(record.state == .completed && record.result == Data(key.utf8))
        }
    }
}

extension TransactionalOutcome {
    var lease: Lease? { if case .committed(let lease, _) = self { lease } else { nil } }
}
