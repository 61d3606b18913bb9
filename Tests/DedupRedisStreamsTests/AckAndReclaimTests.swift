import Dedup
import DedupRedis
import DedupRedisStreams
import Foundation
import MetricsTestKit
import Synchronization
import Testing

/// When entries are acked, reclaimed and dead-lettered.
@Suite("Redis stream consumer: acks, reclaims, dead letters", .timeLimit(.minutes(2)))
struct AckAndReclaimTests {
    struct HandlerFailure: Error, CustomStringConvertible {
        var description: String { "the handler refused the entry" }
    }

    @Test("ack only completed records: applied and duplicate are acked; failed and deferred stay pending")
    func ackRules() async throws {
        try await StreamBed.with { bed in
            let store = try bed.makeStore()
            let dedup = try bed.makeDedup(store: store)
            // Another consumer holds order C: its entry is deferred here.
            let held = try RecordID(namespace: bed.group, key: BusinessKey.encode(["C"])!)
            _ = try await store.claim(ClaimRequest(id: held, lease: .seconds(60), retention: .seconds(3600)))
            let applied = try await bed.add(["order": "A"])
            let duplicate = try await bed.add(["order": "A"])  // a producer's retry
            let failed = try await bed.add(["order": "B"])
            let deferred = try await bed.add(["order": "C"])
            let settlements = Settlements()
            let ledger = Ledger()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.keyStrategy = .field("order")
                    $0.entriesInFlight = 1
                },
                consumer: dedup,
                logger: quietLogger,
                onSettled: settlements.append
            ) { entry, _ in
                ledger.record(entry["order"]!)
                if entry["order"] == "B" { throw HandlerFailure() }
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all four are settled") { settlements.all.count == 4 }
            }
            #expect(settlements.actions(of: applied) == [.acked])
            #expect(settlements.actions(of: duplicate) == [.acked])
            #expect(settlements.actions(of: failed) == [.leftPending])
            #expect(settlements.actions(of: deferred) == [.leftPending])
            #expect(try await bed.pending().map(\.id).sorted() == [failed, deferred].sorted())
            #expect(ledger.all == ["A": 1, "B": 1])
        }
    }

    @Test("a stale consumer whose lease was taken over does not ack the entry the new holder still runs")
    func staleConsumerDoesNotAck() async throws {
        try await StreamBed.with { bed in
            let entry = try await bed.add(["order": "1"])
            let bStarted = Gate()
            let releaseB = Gate()
            let aSettled = Settlements()
            let bSettled = Settlements()
            let ledger = Ledger()
            // Short leases and no renewal: a's lease passes while its handler waits.
            let a = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration(consumer: "a") {
                    $0.reclaimIdleTime = .milliseconds(400)
                    $0.reclaimInterval = .seconds(60)
                },
                consumer: bed.makeDedup(lease: .milliseconds(300), renewal: nil),
                logger: quietLogger,
                onSettled: aSettled.append
            ) { _, context in
                await bStarted.wait()
                ledger.record("a:\(context.fencingToken)")
            }
            let b = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration(consumer: "b") {
                    $0.reclaimIdleTime = .milliseconds(400)
                    $0.reclaimInterval = .milliseconds(50)
                },
                consumer: bed.makeDedup(lease: .milliseconds(300), renewal: nil),
                logger: quietLogger,
                onSettled: bSettled.append
            ) { _, context in
                #expect(context.isTakeover)
                bStarted.open()
                await releaseB.wait()
                ledger.record("b:\(context.fencingToken)")
            }
            try await whileRunning([a]) { _ in
                try await waitUntil("a holds the entry") { try await bed.pending().first?.consumer == "a" }
                try await whileRunning([b]) { _ in
                    try await waitUntil("a's handler has finished after the takeover") { !aSettled.all.isEmpty }
                    let settlement = try #require(aSettled.all.first)
                    #expect(settlement.action == .leftPending)
                    #expect(throws: DedupError.self) { try settlement.outcome.get() }
                    // b still runs it: the entry is pending, now b's.
                    #expect(try await bed.pending().map(\.consumer) == ["b"])
                    releaseB.open()
                    try await waitUntil("b acks it") {
                        try await bed.pending().isEmpty && bSettled.actions(of: entry) == [.acked]
                    }
                }
            }
            #expect(ledger.total == 2)
        }
    }

    @Test("XAUTOCLAIM's cursor is carried: idle entries behind more than 10×COUNT busy ones are reclaimed")
    func reclaimCursorCarried() async throws {
        try await StreamBed.with { bed in
            try await bed.server.cli("XGROUP", "CREATE", bed.stream, bed.group, "0", "MKSTREAM")
            var busy: [String] = []
            for _ in 0..<50 { busy.append(try await bed.add(["kind": "busy"])) }
            var idle: [String] = []
            for _ in 0..<5 { idle.append(try await bed.add(["kind": "idle"])) }
            try await bed.server.cli(
                "XREADGROUP",
                "GROUP",
                bed.group,
                "dead",
                "COUNT",
                "100",
                "STREAMS",
                bed.stream,
                ">"
            )
            // The 50 at the head were delivered just now (another consumer is busy with them); the
            // 5 behind have been idle for long.
            _ = try await bed.server.cli(
                arguments: ["XCLAIM", bed.stream, bed.group, "dead", "0"] + idle + ["IDLE", "100000"]
            )
            let ledger = Ledger()
            let metrics = TestMetrics()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.readCount = 2
                    $0.reclaimIdleTime = .seconds(60)
                    $0.reclaimInterval = .milliseconds(50)
                },
                consumer: bed.makeDedup(),
                logger: quietLogger,
                metricsFactory: metrics
            ) { entry, _ in ledger.record(entry.id.description) }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("the five idle entries are reclaimed and applied") { ledger.total == 5 }
            }
            #expect(Set(ledger.all.keys) == Set(idle))
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("reclaimed")).totalValue == 5)
            #expect(try await bed.pending().map(\.id).sorted() == busy.sorted())
        }
    }

    @Test("an entry failing on its last delivery goes to the dead-letter stream with its fields, ID, count and error")
    func deadLetterAfterMaxDeliveries() async throws {
        try await StreamBed.with { bed in
            let poison = try await bed.add(["order": "poison"])
            let ledger = Ledger()
            let metrics = TestMetrics()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.maxDeliveries = 3
                    $0.reclaimIdleTime = .milliseconds(600)
                    $0.reclaimInterval = .milliseconds(50)
                },
                // No renewal to be late on a loaded machine: the claim is always released after
                // the failure, so each delivery runs the handler (a delivery finding the key still
                // in flight would count without running it).
                consumer: bed.makeDedup(lease: .milliseconds(500), renewal: nil),
                logger: quietLogger,
                metricsFactory: metrics
            ) { entry, _ in
                ledger.record(entry.id.description)
                throw HandlerFailure()
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("the entry is dead-lettered") {
                    try await bed.server.cli("XLEN", "orders:dead") == "1"
                }
            }
            #expect(ledger.count(poison) == 3)
            #expect(try await bed.pending().isEmpty)
            let dead = try await bed.server.cli("XRANGE", "orders:dead", "-", "+").split(separator: "\n").map(
                String.init
            )
            func value(_ name: String) -> String? { dead.firstIndex(of: name).map { dead[$0 + 1] } }
            #expect(value("dead_letter.original_id") == poison)
            #expect(value("dead_letter.delivery_count") == "3")
            #expect(value("dead_letter.last_error") == "the handler refused the entry")
            #expect(value("order") == "poison")
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("dead_lettered")).totalValue == 1)
        }
    }

    @Test("two consumers failing the same entry on its last delivery at once dead-letter it exactly once")
    func deadLetterRaceExactlyOnce() async throws {
        try await StreamBed.with { bed in
            try await bed.server.cli("XGROUP", "CREATE", bed.stream, bed.group, "0", "MKSTREAM")
            let poison = try await bed.add(["order": "poison"])
            try await bed.server.cli("XREADGROUP", "GROUP", bed.group, "dead", "COUNT", "1", "STREAMS", bed.stream, ">")
            try await bed.server.cli(
                "XCLAIM",
                bed.stream,
                bed.group,
                "dead",
                "0",
                poison,
                "IDLE",
                "100000",
                "RETRYCOUNT",
                "15"
            )
            // Both handlers are inside at once before either fails: a's lease passes (no renewal),
            // b reclaims the entry and takes the key over.
            let bothInside = Barrier(parties: 2)
            let settlements = Settlements()
            let metrics = TestMetrics()
            func runner(_ name: String) throws -> RedisStreamConsumer {
                try RedisStreamConsumer(
                    url: bed.server.url,
                    configuration: bed.configuration(consumer: name) {
                        $0.reclaimIdleTime = .milliseconds(400)
                        $0.reclaimInterval = .milliseconds(50)
                    },
                    consumer: bed.makeDedup(lease: .milliseconds(300), renewal: nil),
                    logger: quietLogger,
                    metricsFactory: metrics,
                    onSettled: settlements.append
                ) { _, _ in
                    await bothInside.arrive()
                    throw HandlerFailure()
                }
            }
            try await whileRunning([try runner("a"), try runner("b")]) { _ in
                try await waitUntil("both have failed it") { settlements.all.count == 2 }
            }
            #expect(try await bed.server.cli("XLEN", "orders:dead") == "1")
            #expect(settlements.all.map(\.action).filter { $0 == .deadLettered }.count == 1)
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("dead_lettered")).totalValue == 1)
            #expect(try await bed.pending().isEmpty)
        }
    }
}

/// Lets `parties` tasks through once all have arrived.
final class Barrier: Sendable {
    private let gate = Gate()
    private let arrived = Mutex(0)
    private let parties: Int

    init(parties: Int) { self.parties = parties }

    func arrive() async {
        if arrived.withLock({
            $0 += 1
            return $0
        }) >= parties {
            gate.open()
        }
        await gate.wait()
    }
}
