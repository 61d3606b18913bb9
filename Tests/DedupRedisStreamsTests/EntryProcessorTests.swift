import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import Foundation
import Testing

/// A consumer built with an entry processor (SQLite's transactional mode here) applies the same
/// ack rules to the outcomes the processor returns.
@Suite("Redis stream consumer: an entry processor of one's own", .timeLimit(.minutes(2)))
struct EntryProcessorTests {
    struct Refused: Error {}

    @Test(
        "processInTransaction per entry: applied and duplicate are acked with the effect committed; a failure stays pending"
    )
    func transactionalEntries() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-stream-tx-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try SQLiteDedupStore(path: folder.appendingPathComponent("dedup.sqlite").path, logger: quietLogger)
        defer { store.close() }
        try await store.withTransaction {
            _ = try $0.execute("CREATE TABLE effects(entry TEXT NOT NULL, fencing INTEGER NOT NULL)")
        }
        try await StreamBed.with { bed in
            let dedup = try bed.makeDedup(store: store)
            let applied = try await bed.add(["order": "A"])
            let duplicate = try await bed.add(["order": "A"])  // a producer's retry
            let failed = try await bed.add(["order": "B"])
            let settlements = Settlements()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration { $0.entriesInFlight = 1 },
                consumer: dedup,
                logger: quietLogger,
                onSettled: settlements.append
            ) { entry in
                try await dedup.processInTransaction(key: entry["order"], brokerTime: entry.id.brokerTime) {
                    transaction,
                    context in
                    _ = try transaction.execute(
                        "INSERT INTO effects VALUES (?, ?)",
                        [.text(entry.id.description), .integer(context.fencingToken)]
                    )
                    if entry["order"] == "B" { throw Refused() }
                }
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all three are settled") { settlements.all.count == 3 }
            }
            #expect(settlements.actions(of: applied) == [.acked])
            #expect(settlements.actions(of: duplicate) == [.acked])
            #expect(settlements.actions(of: failed) == [.leftPending])
            let duplicateOutcome = try #require(settlements.all.first { $0.entryID.description == duplicate }).outcome
            guard case .success(.duplicate) = duplicateOutcome else {
                Issue.record("the retry is not a duplicate: \(duplicateOutcome)")
                return
            }
            #expect(try await bed.pending().map(\.id) == [failed])
            // The failed entry's effect row was rolled back with its claim; the applied one committed,
            // with the broker time on its record.
            let rows = try await store.withTransaction { try $0.query("SELECT entry FROM effects") }
            #expect(rows.map { $0[0].string } == [applied])
            let record = try #require(try await store.record(for: RecordID(namespace: bed.group, key: "A")))
            #expect(record.brokerTime == StreamEntryID(applied)?.brokerTime)
        }
    }

    @Test("batch mode runs the processor for each entry of a read, in order, and acks the completed ones together")
    func batchModeRunsEachEntry() async throws {
        try await StreamBed.with { bed in
            let dedup = try bed.makeDedup()
            var ids: [String] = []
            for n in 1...5 { ids.append(try await bed.add(["n": "\(n)"])) }
            let ledger = Ledger()
            let settlements = Settlements()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration { $0.processingMode = .batch },
                consumer: dedup,
                logger: quietLogger,
                onSettled: settlements.append
            ) { entry in
                try await dedup.process(key: entry.id.description, brokerTime: entry.id.brokerTime) { _ in
                    ledger.record(entry["n"]!)
                }
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("all five are settled") { settlements.all.count == 5 }
            }
            #expect(settlements.all.map(\.entryID.description) == ids)
            #expect(settlements.all.allSatisfy { $0.action == .acked })
            #expect(ledger.all == ["1": 1, "2": 1, "3": 1, "4": 1, "5": 1])
            #expect(try await bed.pending().isEmpty)
        }
    }
}
