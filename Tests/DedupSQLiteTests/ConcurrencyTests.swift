import CSQLite
import Dedup
import DedupTestKit
import DedupTestSupport
import Foundation
import Synchronization
import Testing

@testable import DedupSQLite

/// Which keys each handler run applied, across tasks and store objects.
final class Ledger: Sendable {
    private let runs = Mutex<[String: Int]>([:])
    func applied(_ key: String) { runs.withLock { $0[key, default: 0] += 1 } }
    var counts: [String: Int] { runs.withLock { $0 } }
}

@Suite("SQLite concurrency")
struct ConcurrencyTests {
    /// Every task walks all keys (in its own order): claim, apply, complete; duplicates and
    /// in-flight answers are skipped, and a task retries in-flight keys until they complete.
    func race(stores: [SQLiteDedupStore], tasks: Int, keys: Int) async throws -> Ledger {
        let ledger = Ledger()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                let store = stores[task % stores.count]
                group.addTask {
                    var pending = Array(0..<keys).shuffled()
                    while !pending.isEmpty {
                        var inFlight: [Int] = []
                        for key in pending {
                            switch try await store.claim(request("key-\(key)")) {
                            case .acquired(let lease):
                                ledger.applied("key-\(key)")
                                try await store.complete(Completion(lease: lease, retention: .seconds(3600)))
                            case .duplicate:
                                break
                            case .inFlight:
                                inFlight.append(key)
                            case .payloadMismatch(let record):
                                Issue.record("unexpected mismatch \(record)")
                            }
                        }
                        pending = inFlight
                        if !pending.isEmpty { await Task.yield() }
                    }
                }
            }
            try await group.waitForAll()
        }
        return ledger
    }

    func expectAppliedOnce(_ ledger: Ledger, keys: Int, _ store: SQLiteDedupStore) async throws {
        let counts = ledger.counts
        #expect(counts.count == keys)
        #expect(counts.values.allSatisfy { $0 == 1 }, "keys applied more than once: \(counts.filter { $0.value > 1 })")
        let stats = try await store.stats()
        #expect(stats.namespaces.first?.completed == keys)
        #expect(stats.namespaces.first?.inFlight == 0)
    }

    @Test("16 tasks on one store racing on 200 keys apply each key exactly once")
    func oneStore() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        let ledger = try await race(stores: [store], tasks: 16, keys: 200)
        try await expectAppliedOnce(ledger, keys: 200, store)
    }

    @Test("4 store objects on one file, 16 tasks, racing on 200 keys apply each key exactly once")
    func severalStores() async throws {
        let fixture = StoreFixture()
        let stores = try (0..<4).map { _ in
            try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        }
        let ledger = try await race(stores: stores, tasks: 16, keys: 200)
        try await expectAppliedOnce(ledger, keys: 200, stores[0])
    }

    @Test("batch claims from 4 store objects on one file never hand a key to two of them")
    func batches() async throws {
        let fixture = StoreFixture()
        let stores = try (0..<4).map { _ in
            try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        }
        let ledger = Ledger()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for store in stores {
                group.addTask {
                    for start in stride(from: 0, to: 300, by: 25) {
                        let requests = (start..<start + 25).shuffled().map { request("key-\($0)") }
                        let answers = try await store.claim(batch: requests)
                        let leases = answers.compactMap(\.lease)
                        for lease in leases { ledger.applied(lease.id.key) }
                        let done = try await store.complete(
                            batch: leases.map { Completion(lease: $0, retention: .seconds(3600)) }
                        )
                        #expect(done.allSatisfy { $0 == .completed })
                    }
                }
            }
            try await group.waitForAll()
        }
        try await expectAppliedOnce(ledger, keys: 300, stores[0])
    }

    @Test("a write that meets another connection's lock waits on the worker thread, while reads go on inline")
    func busyHandoff() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        let existing = try #require(try await store.claim(request("existing")).lease)
        var raw: OpaquePointer?
        #expect(sqlite3_open(fixture.path, &raw) == SQLITE_OK)
        defer { sqlite3_close(raw) }
        #expect(sqlite3_exec(raw, "BEGIN IMMEDIATE", nil, nil, nil) == SQLITE_OK)
        let claim = Task { try await store.claim(request("new")) }
        while store.busyHandoffs.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        // The claim is waiting for the lock on the worker thread; reads are not blocked.
        #expect(try await store.record(for: existing.id)?.ownerToken == existing.ownerToken)
        #expect(sqlite3_exec(raw, "COMMIT", nil, nil, nil) == SQLITE_OK)
        let answer = try await claim.value
        #expect(answer.lease?.fencingToken == 1)
        #expect(try await store.record(for: makeID("new"))?.state == .inFlight)
    }

    @Test("a lock held past the busy timeout is busy with SQLite's SQLITE_BUSY, and nothing is written")
    func busyTimeout() async throws {
        let fixture = StoreFixture()
        var configuration = fixture.configuration
        configuration.busyTimeout = .milliseconds(50)
        let store = try SQLiteDedupStore(path: fixture.path, configuration: configuration, logger: quietLogger)
        var raw: OpaquePointer?
        #expect(sqlite3_open(fixture.path, &raw) == SQLITE_OK)
        defer { sqlite3_close(raw) }
        #expect(sqlite3_exec(raw, "BEGIN IMMEDIATE", nil, nil, nil) == SQLITE_OK)
        let error = await expectDedupError(.busy) { try await store.claim(request("blocked")) }
        #expect(error?.message.contains(fixture.path) == true)
        #expect(
            (error?.sqliteExtendedResultCode).map { $0 & 0xff } == SQLITE_BUSY,
            "\(String(describing: error?.sqliteExtendedResultCode))"
        )
        await expectDedupError(.busy) { try await store.claim(batch: [request("b1"), request("b2")]) }
        #expect(sqlite3_exec(raw, "ROLLBACK", nil, nil, nil) == SQLITE_OK)
        #expect(try await store.record(for: makeID("blocked")) == nil)
        #expect(try await store.record(for: makeID("b1")) == nil)
    }

    @Test("calls after close throw storeUnavailable")
    func closed() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        store.close()
        store.close()
        await expectDedupError(.storeUnavailable) { try await store.claim(request("k")) }
        await expectDedupError(.storeUnavailable) { try await store.stats() }
    }
}
