import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import Foundation
import MetricsTestKit
import Testing

/// An SQLite dedup file in a folder of its own, with the application's `ledger` table (one row per
/// order); the folder is removed when the last reference goes.
final class LedgerFile: Sendable {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
        "dedup-stream-ledger-\(UUID().uuidString)"
    )
    var path: String { folder.appendingPathComponent("dedup.sqlite").path }

    init() throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    /// A store on the file, the table created, with a row written `earlier` for each of `orders`
    /// (their effects are there already: a replay whose effects were not removed, say).
    func open(busyTimeout: Duration = .seconds(5), orders: [String] = []) async throws -> SQLiteDedupStore {
        let store = try SQLiteDedupStore(
            path: path,
            configuration: .init(busyTimeout: busyTimeout),
            logger: quietLogger
        )
        try await store.withTransaction {
            _ = try $0.execute("CREATE TABLE IF NOT EXISTS ledger (order_id TEXT PRIMARY KEY, entry TEXT NOT NULL)")
            for order in orders { _ = try $0.execute("INSERT INTO ledger VALUES (?, 'earlier')", .text(order)) }
        }
        return store
    }

    /// The `entry` column of every row.
    func entries(_ store: SQLiteDedupStore) async throws -> [String?] {
        try await store.withTransaction { try $0.query("SELECT entry FROM ledger ORDER BY order_id") }.map {
            $0[0].string
        }
    }
}

/// A stream consumer on `bed` that writes each entry's effect, a ledger row for its order, in
/// SQLite's transactional mode on `store`, recording its runs in `runs`. Its reclaim idle time is
/// long: an entry comes again when the test makes it idle (``StreamBed/makeIdle(_:consumer:)``),
/// not after a wait.
func ledgerWriter(
    _ bed: StreamBed,
    store: SQLiteDedupStore,
    maxDeliveries: Int,
    metrics: TestMetrics,
    runs: Ledger = Ledger(),
    settlements: Settlements
) throws -> RedisStreamConsumer {
    let dedup = try IdempotentConsumer(store: store, namespace: bed.group, logger: quietLogger, metricsFactory: metrics)
    return try RedisStreamConsumer(
        url: bed.server.url,
        configuration: bed.configuration {
            $0.maxDeliveries = maxDeliveries
            $0.reclaimIdleTime = .seconds(3600)
            $0.reclaimInterval = .milliseconds(20)
        },
        consumer: dedup,
        logger: quietLogger,
        metricsFactory: metrics,
        onSettled: settlements.append
    ) { entry in
        try await dedup.processInTransaction(key: entry["order"], brokerTime: entry.id.brokerTime) { transaction, _ in
            runs.record(entry.id.description)
            try transaction.execute(
                "INSERT INTO ledger VALUES (?, ?)",
                [.text(entry["order"] ?? ""), .text(entry.id.description)]
            )
        }
    }
}

/// A failing statement of a handler's own fails again on every delivery: it counts toward
/// `maxDeliveries` and the entry is dead-lettered; the store's own failure does not count.
@Suite("Redis stream consumer: failures inside SQLite transactions", .timeLimit(.minutes(2)))
struct TransactionalFailureTests {
    @Test(
        "an entry whose transactional handler hits a UNIQUE violation on every delivery is dead-lettered once, on its maxDeliveries-th"
    )
    func constraintViolationIsDeadLettered() async throws {
        let file = try LedgerFile()
        let store = try await file.open(orders: ["A"])
        defer { store.close() }
        try await StreamBed.with { bed in
            let replayed = try await bed.add(["order": "A"])
            let (metrics, runs, settlements) = (TestMetrics(), Ledger(), Settlements())
            let consumer = try ledgerWriter(
                bed,
                store: store,
                maxDeliveries: 3,
                metrics: metrics,
                runs: runs,
                settlements: settlements
            )
            try await whileRunning([consumer]) { _ in
                try await waitUntil("three deliveries are settled") {
                    try await bed.makeIdle(replayed)
                    return settlements.all.count >= 3
                }
            }
            #expect(settlements.actions(of: replayed) == [.leftPending, .leftPending, .deadLettered])
            for settlement in settlements.all {
                guard case .failure(let error as DedupError) = settlement.outcome else {
                    Issue.record("expected a DedupError, got \(settlement.outcome)")
                    continue
                }
                #expect(error.code == .handlerStatementFailed, "\(error)")
            }
            #expect(runs.count(replayed) == 3)
            #expect(try await bed.pending().isEmpty)
            #expect(try await bed.server.cli("XLEN", "orders:dead") == "1")
            let dead = try await bed.server.cli("XRANGE", "orders:dead", "-", "+").split(separator: "\n").map(
                String.init
            )
            func value(_ name: String) -> String? { dead.firstIndex(of: name).map { dead[$0 + 1] } }
            #expect(value("dead_letter.original_id") == replayed)
            #expect(value("dead_letter.delivery_count") == "3")
            #expect(
                value("dead_letter.last_error")?.contains("UNIQUE constraint failed: ledger.order_id") == true,
                "\(dead)"
            )
            // Counted as the handler's failures, not the store's.
            #expect(try metrics.expectCounter("dedup.handler.failures", [("namespace", bed.group)]).totalValue == 3)
            #expect(metrics.counters.filter { $0.label == "dedup.store.errors" }.isEmpty)
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("dead_lettered")).totalValue == 1)
            // Nothing was written: the earlier row stands, and the key has no record.
            #expect(try await file.entries(store) == ["earlier"])
            #expect(try await store.record(for: RecordID(namespace: bed.group, key: "A")) == nil)
        }
    }

    @Test("a plain handler's own SQLiteTransaction statement failure counts toward maxDeliveries too")
    func plainHandlerStatementFailureCounts() async throws {
        let file = try LedgerFile()
        let store = try await file.open(orders: ["A"])
        defer { store.close() }
        try await StreamBed.with { bed in
            let entry = try await bed.add(["order": "A"])
            let settlements = Settlements()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.maxDeliveries = 1
                    $0.keyStrategy = .field("order")
                },
                consumer: bed.makeDedup(),
                logger: quietLogger,
                onSettled: settlements.append
            ) { entry, _ in
                // The dedup record lives in Redis; the effect is written to the SQLite file.
                try await store.withTransaction {
                    _ = try $0.execute("INSERT INTO ledger VALUES ('A', ?)", .text(entry.id.description))
                }
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("the entry is settled") { !settlements.all.isEmpty }
            }
            #expect(settlements.actions(of: entry) == [.deadLettered])
            #expect(try await bed.server.cli("XLEN", "orders:dead") == "1")
        }
    }

    @Test("the store's own failure (its write lock held past the busy timeout) does not count toward maxDeliveries")
    func busyDoesNotCount() async throws {
        let file = try LedgerFile()
        let store = try await file.open(busyTimeout: .milliseconds(50))
        defer { store.close() }
        // Another writer of the file (another process, say) holds its write lock until released.
        let holder = try await file.open()
        defer { holder.close() }
        let lockHeld = Gate()
        let release = DispatchSemaphore(value: 0)
        defer { release.signal() }
        let holding = Task {
            try await holder.withTransaction { _ in
                lockHeld.open()
                release.wait()
            }
        }
        await lockHeld.wait()
        try await StreamBed.with { bed in
            let entry = try await bed.add(["order": "B"])
            let (metrics, settlements) = (TestMetrics(), Settlements())
            let consumer = try ledgerWriter(
                bed,
                store: store,
                maxDeliveries: 1,
                metrics: metrics,
                settlements: settlements
            )
            try await whileRunning([consumer]) { _ in
                try await waitUntil("the first delivery is settled") { !settlements.all.isEmpty }
                // Its only allowed delivery failed, as a store failure: it stays pending.
                #expect(settlements.actions(of: entry) == [.leftPending])
                guard case .failure(let error as DedupError) = settlements.all[0].outcome else {
                    Issue.record("expected a DedupError, got \(settlements.all[0].outcome)")
                    return
                }
                #expect(error.code == .busy, "\(error)")
                release.signal()
                try await holding.value
                try await waitUntil("the redelivery is applied") {
                    try await bed.makeIdle(entry)
                    return settlements.all.count >= 2
                }
            }
            #expect(settlements.actions(of: entry) == [.leftPending, .acked])
            #expect(try await bed.server.cli("XLEN", "orders:dead") == "0")
            #expect(
                try metrics.expectCounter("dedup.store.errors", [("namespace", bed.group), ("code", "busy")]).totalValue
                    == 1
            )
            #expect(try metrics.expectCounter("dedup.handler.failures", [("namespace", bed.group)]).totalValue == 0)
            #expect(try await file.entries(store) == [entry])
        }
    }
}
