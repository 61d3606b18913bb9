import Dedup
import DedupRedis
import Foundation
import MetricsTestKit
import Synchronization
import Testing

@testable import DedupRedisStreams

/// Creating the group, where it starts, and the order entries are read in.
@Suite("Redis stream consumer: group and reading", .timeLimit(.minutes(2)))
struct GroupAndReadingTests {
    /// A consumer that records each entry's ID in `ledger`.
    func recording(
        _ bed: StreamBed,
        _ ledger: Ledger,
        consumer name: String = "c1",
        _ change: (inout RedisStreamConsumer.Configuration) -> Void = { _ in }
    ) throws -> RedisStreamConsumer {
        let configuration = bed.configuration(consumer: name, change)
        // Each group dedups in a namespace of its own, as groups of different services do.
        return try RedisStreamConsumer(
            url: bed.server.url,
            configuration: configuration,
            consumer: bed.makeDedup(namespace: configuration.group),
            logger: quietLogger
        ) { entry, _ in ledger.record(entry.id.description) }
    }

    @Test("a missing stream and group are created; an existing group keeps its position (BUSYGROUP ignored)")
    func groupCreatedIfMissing() async throws {
        try await StreamBed.with { bed in
            let ledger = Ledger()
            try await whileRunning([try recording(bed, ledger)]) { _ in
                try await waitUntil("the group exists") {
                    try await bed.server.cli("XINFO", "GROUPS", bed.stream).contains(bed.group)
                }
                let id = try await bed.add(["order": "1"])
                try await waitUntil("the entry is applied and acked") {
                    try await bed.pending().isEmpty && ledger.count(id) == 1
                }
            }
            // A second consumer finds the group (BUSYGROUP) and does not move it back to the beginning.
            let second = Ledger()
            try await whileRunning([try recording(bed, second, consumer: "c2")]) { _ in
                let id = try await bed.add(["order": "2"])
                try await waitUntil("the new entry is applied") { second.count(id) == 1 }
            }
            #expect(second.total == 1)
        }
    }

    @Test("NOGROUP after the stream was deleted: the group is created again and new entries are read")
    func groupRecreatedAfterStreamDeleted() async throws {
        try await StreamBed.with { bed in
            let ledger = Ledger()
            try await whileRunning([try recording(bed, ledger)]) { _ in
                let first = try await bed.add(["order": "1"], id: "1-0")
                try await waitUntil("the first entry is applied") { ledger.count(first) == 1 }
                try await bed.server.cli("DEL", bed.stream)
                // A new stream, without the group (its IDs start again: 1-0 is taken by the old one's).
                let second = try await bed.add(["order": "2"], id: "2-0")
                try await waitUntil("the entry of the new stream is applied") {
                    try await bed.pending().isEmpty && ledger.count(second) == 1
                }
            }
            #expect(ledger.total == 2)
        }
    }

    @Test("a stream deleted between two calls reads as a missing group on every call, so the runner creates it again")
    func deletedStreamIsAMissingGroup() async throws {
        try await StreamBed.with { bed in
            try await bed.server.cli("XGROUP", "CREATE", bed.stream, bed.group, "0", "MKSTREAM")
            let client = StreamClient(
                endpoint: try RedisEndpoint(url: bed.server.url),
                configuration: bed.configuration(),
                logger: quietLogger
            )
            try await bed.server.cli("DEL", bed.stream)
            // The runner reads the lag right after a read or a reclaim scan: the stream may be gone
            // by then. Before, XINFO's "ERR no such key" was an error the runner stopped on.
            await #expect(throws: GroupMissing.self) { _ = try await client.lag() }
            await #expect(throws: GroupMissing.self) { _ = try await client.readNew(count: 1, block: nil) }
            await #expect(throws: GroupMissing.self) {
                _ = try await client.reclaim(
                    minimumIdle: .seconds(1),
                    cursor: .zero,
                    count: 1,
                    inFlightHere: { _ in false }
                )
            }
            await client.close()
        }
    }

    @Test("start at the beginning, the latest entry, or a timestamp (the entry at the timestamp included)")
    func startPositions() async throws {
        try await StreamBed.with { bed in
            for id in ["1000-0", "1999-5", "2000-0", "2000-1", "3000-0"] { try await bed.add(["n": id], id: id) }

            let beginning = Ledger()
            try await whileRunning([try recording(bed, beginning) { $0.group = "from-beginning" }]) { _ in
                try await waitUntil("all five are applied") { beginning.total == 5 }
            }

            let fromTime = Ledger()
            let start = Date(timeIntervalSince1970: 2.0)
            try await whileRunning([
                try recording(bed, fromTime) {
                    $0.group = "from-time"
                    $0.startPosition = .timestamp(start)
                }
            ]) { _ in
                try await waitUntil("the entries from 2000 ms on are applied") { fromTime.total == 3 }
            }
            #expect(Set(fromTime.all.keys) == ["2000-0", "2000-1", "3000-0"])

            let latest = Ledger()
            try await whileRunning([
                try recording(bed, latest) {
                    $0.group = "from-latest"
                    $0.startPosition = .latest
                }
            ]) { _ in
                try await waitUntil("the group exists") {
                    try await bed.server.cli("XINFO", "GROUPS", bed.stream).contains("from-latest")
                }
                try await bed.add(["n": "new"], id: "4000-0")
                try await waitUntil("the new entry is applied") { latest.total == 1 }
            }
            #expect(Array(latest.all.keys) == ["4000-0"])
        }
    }

    @Test("at start the consumer's own pending entries are processed first, then new ones")
    func ownPendingDrainedFirst() async throws {
        try await StreamBed.with { bed in
            try await bed.server.cli("XGROUP", "CREATE", bed.stream, bed.group, "0", "MKSTREAM")
            for n in 1...3 { try await bed.add(["n": "\(n)"], id: "\(n)-0") }
            // c1 read these before (a crash, say): they are pending for c1, never to be read with '>'.
            try await bed.server.cli("XREADGROUP", "GROUP", bed.group, "c1", "COUNT", "10", "STREAMS", bed.stream, ">")
            for n in 4...5 { try await bed.add(["n": "\(n)"], id: "\(n)-0") }
            let order = OrderLog()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.entriesInFlight = 1
                    $0.readCount = 1
                },
                consumer: bed.makeDedup(),
                logger: quietLogger
            ) { entry, _ in order.append(entry.id.description) }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all five are applied") { try await bed.pending().isEmpty && order.all.count == 5 }
            }
            #expect(order.all == ["1-0", "2-0", "3-0", "4-0", "5-0"])
        }
    }

    @Test("pending entries trimmed from the stream are acked and counted, from XREADGROUP and from XAUTOCLAIM")
    func trimmedPendingEntriesAcked() async throws {
        try await StreamBed.with { bed in
            try await bed.server.cli("XGROUP", "CREATE", bed.stream, bed.group, "0", "MKSTREAM")
            for n in 1...3 { try await bed.add(["n": "\(n)"], id: "\(n)-0") }
            try await bed.server.cli("XREADGROUP", "GROUP", bed.group, "c1", "COUNT", "10", "STREAMS", bed.stream, ">")
            for n in 4...6 { try await bed.add(["n": "\(n)"], id: "\(n)-0") }
            // A dead consumer's entries, long idle.
            try await bed.server.cli(
                "XREADGROUP",
                "GROUP",
                bed.group,
                "dead",
                "COUNT",
                "10",
                "STREAMS",
                bed.stream,
                ">"
            )
            try await bed.server.cli(
                "XCLAIM",
                bed.stream,
                bed.group,
                "dead",
                "0",
                "4-0",
                "5-0",
                "6-0",
                "IDLE",
                "100000"
            )
            try await bed.server.cli("XDEL", bed.stream, "1-0", "2-0", "4-0", "5-0")
            let metrics = TestMetrics()
            let ledger = Ledger()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration(),
                consumer: bed.makeDedup(),
                logger: quietLogger,
                metricsFactory: metrics
            ) { entry, _ in ledger.record(entry.id.description) }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("nothing is pending") { try await bed.pending().isEmpty && ledger.total == 2 }
            }
            #expect(ledger.all == ["3-0": 1, "6-0": 1])
            #expect(try metrics.expectCounter("dedup.stream.entries", bed.dimensions("trimmed")).totalValue == 4)
        }
    }
}

/// The order entries were handled in.
final class OrderLog: Sendable {
    private let entries = Mutex<[String]>([])
    func append(_ id: String) { entries.withLock { $0.append(id) } }
    var all: [String] { entries.withLock { $0 } }
}
