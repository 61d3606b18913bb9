import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import DedupTestKit
import Foundation
import MetricsTestKit
import Synchronization
import Testing

/// Shutdown, a Redis restart, metrics, batches and configuration.
@Suite("Redis stream consumer: lifecycle", .timeLimit(.minutes(2)))
struct LifecycleTests {
    @Test("graceful shutdown stops reading, lets the handlers in flight finish and acks them")
    func gracefulShutdownAcksInFlight() async throws {
        try await StreamBed.with { bed in
            var ids: [String] = []
            for n in 1...6 { ids.append(try await bed.add(["n": "\(n)"])) }
            let started = Ledger()
            let finish = Gate()
            let settlements = Settlements()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration { $0.entriesInFlight = 4 },
                consumer: bed.makeDedup(),
                logger: quietLogger,
                onSettled: settlements.append
            ) { entry, _ in
                started.record(entry.id.description)
                await finish.wait()
            }
            try await whileRunning([consumer]) { group in
                try await waitUntil("four handlers run") { started.total == 4 }
                await group.triggerGracefulShutdown()
                finish.open()
            }
            // Every handler that ran finished and was acked; the two never read were not delivered.
            #expect(settlements.all.count == 4)
            #expect(settlements.all.allSatisfy { $0.action == .acked })
            #expect(try await bed.pending().isEmpty)
            #expect(Set(started.all.keys) == Set(ids.prefix(4)))
            #expect(
                try await bed.server.cli(
                    "XREADGROUP",
                    "GROUP",
                    bed.group,
                    "check",
                    "COUNT",
                    "10",
                    "STREAMS",
                    bed.stream,
                    ">"
                )
                .contains(ids[4])
            )
        }
    }

    @Test("Redis restarted mid-run: the consumer recovers without a restart and applies every entry")
    func survivesRedisRestart() async throws {
        try await StreamBed.with(arguments: ["--appendonly", "yes", "--appendfsync", "always"]) { bed in
            let ledger = Ledger()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.reclaimIdleTime = .seconds(2)
                    $0.reclaimInterval = .milliseconds(200)
                },
                consumer: bed.makeDedup(lease: .seconds(1), renewal: .milliseconds(300)),
                logger: quietLogger
            ) { entry, _ in
                ledger.record(entry["n"]!)
                try await Task.sleep(for: .milliseconds(2))
            }
            try await whileRunning([consumer]) { _ in
                for n in 0..<100 { try await bed.add(["n": "\(n)"]) }
                try await waitUntil("some entries are applied") { ledger.total >= 10 }
                await bed.server.kill()
                try await bed.server.restart()
                for n in 100..<200 { try await bed.add(["n": "\(n)"]) }
                try await waitUntil("every entry is applied and acked", timeout: .seconds(40)) {
                    try await bed.pending().isEmpty && (0..<200).allSatisfy { ledger.count("\($0)") >= 1 }
                }
            }
            #expect(try await bed.server.cli("XLEN", bed.stream) == "200")
        }
    }

    @Test("metrics: entries read and acked, and the group's lag")
    func metricsAndLag() async throws {
        try await StreamBed.with { bed in
            for n in 1...10 { try await bed.add(["n": "\(n)"]) }
            let metrics = TestMetrics()
            let started = Ledger()
            let finish = Gate()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.entriesInFlight = 2
                    $0.readCount = 2
                },
                consumer: bed.makeDedup(),
                logger: quietLogger,
                metricsFactory: metrics
            ) { entry, _ in
                started.record(entry.id.description)
                await finish.wait()
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("two handlers run") { started.total == 2 }
                // Read after the first read: eight entries not yet delivered to the group.
                #expect(
                    try metrics.expectGauge("dedup.stream.lag", [("stream", bed.stream), ("group", bed.group)])
                        .lastValue == 8
                )
                finish.open()
                try await waitUntil("all are acked") { try await bed.pending().isEmpty && started.total == 10 }
            }
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("read")).totalValue == 10)
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("acked")).totalValue == 10)
            #expect(
                try metrics.expectGauge("dedup.stream.lag", [("stream", bed.stream), ("group", bed.group)]).lastValue
                    == 0
            )
        }
    }

    @Test("batches through processBatch on an SQLite store: a business key published twice is applied once")
    func batchesOnSQLite() async throws {
        try await StreamBed.with { bed in
            let path = FileManager.default.temporaryDirectory.appendingPathComponent(
                "dedup-stream-\(UUID().uuidString).sqlite"
            ).path
            defer { try? FileManager.default.removeItem(atPath: path) }
            let store = try SQLiteDedupStore(path: path)
            let orders = (0..<30).map { "order-\($0)" }
            for order in orders { try await bed.add(["order": order]) }
            for order in orders.prefix(10) { try await bed.add(["order": order]) }  // a producer's retries
            let ledger = Ledger()
            let metrics = TestMetrics()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.processingMode = .batch
                    $0.readCount = 8
                    $0.keyStrategy = .field("order")
                },
                consumer: bed.makeDedup(store: store),
                logger: quietLogger,
                metricsFactory: metrics
            ) { entry, _ in ledger.record(entry["order"]!) }
            let acked = try metrics.expectCounter("dedup.stream.entries", bed.dimensions("acked"))
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all forty entries are acked") {
                    try await bed.pending().isEmpty && acked.totalValue == 40
                }
            }
            #expect(ledger.all == Dictionary(uniqueKeysWithValues: orders.map { ($0, 1) }))
        }
    }

    @Test("in batch mode a whole read is one batch, whatever the in-flight limit: one claim for 100 entries")
    func batchModeReadsWholeBatches() async throws {
        try await StreamBed.with { bed in
            for index in 0..<100 { try await bed.add(["order": "order-\(index)"]) }
            let store = FaultInjectingDedupStore(try bed.makeStore())
            let metrics = TestMetrics()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.processingMode = .batch
                    $0.readCount = 100
                    $0.entriesInFlight = 16
                },
                consumer: bed.makeDedup(store: store),
                logger: quietLogger,
                metricsFactory: metrics
            ) { _, _ in }
            let acked = try metrics.expectCounter("dedup.stream.entries", bed.dimensions("acked"))
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all hundred entries are acked") { acked.totalValue == 100 }
            }
            // Before, each read was cut to the 16 free slots: seven batches of 16 or fewer.
            #expect(store.calls(.claim) == 1)
        }
    }

    @Test("a reclaim idle time not longer than the lease is refused")
    func reclaimIdleMustExceedLease() async throws {
        try await StreamBed.with { bed in
            let error = #expect(throws: DedupError.self) {
                try RedisStreamConsumer(
                    url: bed.server.url,
                    configuration: bed.configuration { $0.reclaimIdleTime = .seconds(5) },
                    consumer: bed.makeDedup(lease: .seconds(5)),
                    logger: quietLogger
                ) { _, _ in }
            }
            #expect(error?.code == .invalidConfiguration)
        }
    }

    @Test("the group is positioned just before a timestamp's first ID")
    func justBeforeTimestamp() {
        #expect(StreamEntryID.justBefore(Date(timeIntervalSince1970: 2)).description == "1999-18446744073709551615")
        #expect(StreamEntryID.justBefore(Date(timeIntervalSince1970: 0)) == .zero)
        #expect(StreamEntryID("1999-18446744073709551615")! < StreamEntryID("2000-0")!)
        #expect(StreamEntryID("12") == StreamEntryID(milliseconds: 12, sequence: 0))
        #expect(StreamEntryID("x-1") == nil)
    }
}
