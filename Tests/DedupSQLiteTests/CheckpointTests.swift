import CSQLite
import Dedup
import Foundation
import Synchronization
import Testing

@testable import DedupSQLite

/// The write-ahead log's checkpoints: the worker thread keeps the log near its threshold, so no
/// claim checkpoints inside its commit unless a reader keeps the log from starting over.
@Suite("SQLite checkpoints")
struct CheckpointTests {
    static let threshold = 20

    func open(_ fixture: StoreFixture) throws -> SQLiteDedupStore {
        var configuration = fixture.configuration
        configuration.checkpointPages = Self.threshold
        return try SQLiteDedupStore(path: fixture.path, configuration: configuration)
    }

    /// Waits for the jobs queued on the worker thread so far, a checkpoint the last commit started included.
    func settle(_ store: SQLiteDedupStore) async throws {
        try await store.onWorker("settling") { _ in }
    }

    @Test("the worker's checkpoints keep the log near its threshold and no commit checkpoints inline")
    func backgroundCheckpointsBoundTheLog() async throws {
        let fixture = StoreFixture()
        let store = try open(fixture)
        defer { store.close() }
        let trigger = try #require(store.checkpoints)
        // Another writer commits while each background checkpoint runs, as a busy consumer would.
        // Used only on the worker thread while the test awaits it.
        nonisolated(unsafe) let writer = try Connection(path: fixture.path)
        defer { writer.close() }
        writer.setBusyTimeout(.seconds(5))
        let commits = Atomic<Int>(0)
        // Its transaction spans the passive pass, so its commit adds frames the pass did not copy.
        trigger.aroundPassivePass.withLock {
            $0 = { pass in
                let index = commits.load(ordering: .relaxed)
                let began = (try? writer.execute("BEGIN IMMEDIATE")) != nil
                let inserted =
                    (try? writer.execute(
                        "INSERT INTO dedup_records (namespace, key, state, fencing, attempt, created_at, completed_at, "
                            + "expires_at) VALUES ('other', 'key-\(index)', 'completed', 1, 1, 0, 0, 1)"
                    )) != nil
                pass()
                if began && inserted && (try? writer.execute("COMMIT")) != nil {
                    commits.add(1, ordering: .relaxed)
                }
            }
        }
        var largest = 0
        for index in 0..<400 {
            _ = try await store.claim(request("key-\(index)"))
            largest = max(largest, trigger.logPages.load(ordering: .relaxed))
            try await settle(store)
        }
        #expect(largest < 2 * Self.threshold, "the log reached \(largest) pages")
        #expect(trigger.inlineRuns.load(ordering: .relaxed) == 0)
        #expect(commits.load(ordering: .relaxed) > 0)
        #expect(trigger.restarts.load(ordering: .relaxed) > 0)
    }

    @Test("a reader holding an old snapshot keeps the log from starting over; a commit then checkpoints inline")
    func pinnedSnapshotFallsBackToInline() async throws {
        let fixture = StoreFixture()
        let store = try open(fixture)
        defer { store.close() }
        let trigger = try #require(store.checkpoints)
        _ = try await store.claim(request("before-the-reader"))
        let reader = try Connection(path: fixture.path)
        defer { reader.close() }
        try reader.execute("BEGIN")
        #expect(try reader.texts("SELECT key FROM dedup_records") == ["before-the-reader"])
        var index = 0
        while trigger.inlineRuns.load(ordering: .relaxed) == 0 && index < 2000 {
            _ = try await store.claim(request("key-\(index)"))
            try await settle(store)
            index += 1
        }
        #expect(trigger.inlineRuns.load(ordering: .relaxed) == 1)
        #expect(trigger.logPages.load(ordering: .relaxed) >= CheckpointTrigger.inlineFactor * Self.threshold)
        try reader.execute("COMMIT")
        _ = try await store.claim(request("after-the-reader"))
        try await settle(store)
        _ = try await store.claim(request("after-the-restart"))
        #expect(trigger.logPages.load(ordering: .relaxed) < 2 * Self.threshold)
    }
}
