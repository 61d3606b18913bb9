import Dedup
import DedupTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import DedupRedis

@Suite("Redis store's task executor: tasks on the connection's thread")
struct StoreExecutorTests {
    /// A connection that never waits to gather callers: whatever shares a round trip here shares
    /// it because the tasks ran on the I/O thread before it.
    private func ungatheredConnection(_ server: RedisServer) throws -> RedisConnection {
        RedisConnection(settings: try connectionSettings(server, gatherWindow: .zero), index: 0)
    }

    @Test("tasks preferring the connection run on its thread and send one command each per round trip")
    func tasksShareEveryRoundTrip() async throws {
        try await withRedisServer { server in
            let connection = try ungatheredConnection(server)
            let tasks = 8
            let steps = 10
            let onThread = try await withTaskExecutorPreference(connection) {
                // The children are queued on the I/O thread behind this task, so they all run
                // (and queue their first command) before the first round trip.
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for task in 0..<tasks {
                        group.addTask {
                            var onThread = 0
                            for step in 0..<steps {
                                let reply = try await connection.execute([RedisCommand("INCR", "task-\(task)")])
                                #expect(reply == [.integer(Int64(step + 1))])
                                if connection.isIOThread { onThread += 1 }
                            }
                            return onThread
                        }
                    }
                    return try await group.reduce(0, +)
                }
            }
            #expect(onThread == tasks * steps)
            #expect(connection.unitsSent.load(ordering: .relaxed) == tasks * steps)
            #expect(connection.roundTrips.load(ordering: .relaxed) == steps)
            await connection.close()
        }
    }

    @Test("a task on the connection's thread that keeps yielding does not hold up its round trips")
    func yieldingTaskLetsRoundTripsThrough() async throws {
        try await withRedisServer { server in
            let connection = try ungatheredConnection(server)
            let answered = try await withTaskExecutorPreference(connection) {
                // An unstructured task does not inherit the preference: its call is queued from
                // another thread while this task yields on the I/O thread, waiting for the answer.
                let call = Task { try await connection.execute([RedisCommand("PING")]) }
                var yields = 0
                while connection.roundTrips.load(ordering: .relaxed) == 0 && yields < 1_000_000 {
                    await Task.yield()
                    yields += 1
                }
                return try await call.value == [.status("PONG")] && yields < 1_000_000
            }
            #expect(answered)
            await connection.close()
        }
    }

    @Test("consumer tasks on the store's executor apply each message once, two round trips a message shared")
    func consumersOnTheStoresExecutor() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, poolSize: 1)
            let consumer = try IdempotentConsumer(store: store, namespace: "orders")
            let keys = (0..<100).map { "order-\($0)" }
            // Every key delivered twice, by different tasks.
            let deliveries = keys + keys.reversed()
            let tasks = 8
            let applied = Ledger()
            let connection = store.seedPool.connections[0]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<tasks {
                    group.addTask(executorPreference: store.taskExecutor) {
                        for index in stride(from: task, to: deliveries.count, by: tasks) {
                            let key = deliveries[index]
                            _ = try await consumer.process(key: key) { _ in
                                applied.record(key, onIOThread: connection.isIOThread)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let ledger = applied.counts
            #expect(ledger.count == keys.count)
            #expect(ledger.values.allSatisfy { $0 == 1 })
            // The handlers ran on the connection's thread, between its round trips.
            #expect(applied.offThread == 0)
            let roundTrips = connection.roundTrips.load(ordering: .relaxed)
            let units = connection.unitsSent.load(ordering: .relaxed)
            // Alone, a task would make one round trip per unit; eight of them share most.
            #expect(units >= deliveries.count)
            #expect(roundTrips * 4 <= units, "\(roundTrips) round trips for \(units) units")
            await store.close()
        }
    }

    @Test("after the store closes, tasks preferring its executor still run, and calls fail as closed")
    func executorOutlivesTheStore() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let executor = store.taskExecutor
            _ = try await store.claim(request(id("orders", "before-close")))
            await store.close()
            let outcome: Result<ClaimAnswer, DedupError> = await withTaskExecutorPreference(executor) {
                try? await Task.sleep(for: .milliseconds(1))  // resumed through the executor
                do {
                    return .success(try await store.claim(request(id("orders", "after-close"))))
                } catch let error as DedupError {
                    return .failure(error)
                } catch {
                    Issue.record("unexpected error \(error)")
                    return .failure(DedupError(.storeError, "unexpected"))
                }
            }
            guard case .failure(let error) = outcome else {
                Issue.record("a closed store answered \(outcome)")
                return
            }
            #expect(error.code == .storeUnavailable)
        }
    }

    @Test("a task on the executor that closes the store does not wait for itself")
    func closingFromTheExecutor() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            try await withTaskExecutorPreference(store.taskExecutor) {
                _ = try await store.claim(request(id("orders", "1")))
                await store.close()
            }
            await #expect(throws: DedupError.self) { try await store.claim(request(id("orders", "2"))) }
        }
    }
}

/// How many times each key's effect was applied.
private final class Ledger: Sendable {
    private let applied = Mutex<(counts: [String: Int], offThread: Int)>(([:], 0))

    func record(_ key: String, onIOThread: Bool) {
        applied.withLock {
            $0.counts[key, default: 0] += 1
            if !onIOThread { $0.offThread += 1 }
        }
    }
    var counts: [String: Int] { applied.withLock { $0.counts } }
    /// Effects applied off the connection's thread.
    var offThread: Int { applied.withLock { $0.offThread } }
}
