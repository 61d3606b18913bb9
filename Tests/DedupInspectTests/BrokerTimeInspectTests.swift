import Dedup
import DedupInspect
import DedupRedis
import DedupSQLite
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// Broker time through `dedup-inspect` and through a replay after a consumer lagged hours behind,
/// on a real SQLite file and a real redis-server.
@Suite("Broker time: dedup-inspect and lagged replays")
struct BrokerTimeInspectTests {
    static let hour: Int64 = 3_600_000

    // MARK: list, show, stats

    @Test("SQLite: list and show print the broker time (- when absent), stats its range, list and reset select by it")
    func inspectSQLite() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/dedup.sqlite"
        try await inspectShowsBrokerTime(try SQLiteDedupStore(path: path), location: "sqlite:\(path)")
    }

    @Test("Redis: list and show print the broker time (- when absent), stats its range, list and reset select by it")
    func inspectRedis() async throws {
        try await withRedisServer { server in
            let store = try RedisDedupStore(url: server.url(password: nil))
            try await inspectShowsBrokerTime(store, location: server.url(password: nil))
            await store.close()
        }
    }

    func inspectShowsBrokerTime(_ store: any DedupStore, location: String) async throws {
        let consumer = try IdempotentConsumer(store: store, namespace: "orders")
        let now = SystemDedupClock().nowMilliseconds()
        let published = now - 3 * Self.hour
        #expect(
            try await consumer.process(key: "lagged", brokerTime: Date(millisecondsSince1970: published)) { _ in }
                == .applied
        )
        #expect(try await consumer.process(key: "plain") { _ in } == .applied)
        let publishedText = Timestamp.format(milliseconds: published)

        let list = try await InspectBinary.run(["list", "--store", location, "--format", "json"])
        #expect(list.status == 0, "\(list.stderr)")
        let records = Dictionary(
            uniqueKeysWithValues: try list.json().objects("records").map { ($0.string("key")!, $0) }
        )
        #expect(records["lagged"]?.string("broker_time") == publishedText)
        #expect(records["lagged"]?.int("broker_time_ms") == Int(published))
        #expect(records["plain"]?["broker_time"] is NSNull)
        let table = try await InspectBinary.run(["list", "--store", location])
        #expect(table.stdout.contains("BROKER_TIME"))
        #expect(table.stdout.split(separator: "\n").contains { $0.hasSuffix("lagged") && $0.contains(publishedText) })
        #expect(table.stdout.split(separator: "\n").contains { $0.hasSuffix("plain") && $0.contains(" - ") })

        let show = try await InspectBinary.run(["show", "--store", location, "--namespace", "orders", "lagged"])
        #expect(show.stdout.contains("broker time:") && show.stdout.contains(publishedText), "\(show.stdout)")
        let showJSON = try await InspectBinary.run([
            "show", "--store", location, "--namespace", "orders", "plain", "--format", "json",
        ])
        #expect(try showJSON.json().object("record")?["broker_time"] is NSNull)

        let stats = try await InspectBinary.run(["stats", "--store", location, "--format", "json"])
        let namespace = try #require(try stats.json().objects("namespaces").first)
        #expect(
            namespace.string("oldest_broker_time") == publishedText
                && namespace.string("newest_broker_time") == publishedText
        )
        #expect(try await InspectBinary.run(["stats", "--store", location]).stdout.contains("OLDEST_BROKER"))

        // The lagged record was processed now, but published three hours ago: a range around its
        // broker time lists it, one around now lists only the other.
        let around = ["--from", "\(published - Self.hour)ms", "--until", "\(published + Self.hour)ms"]
        let byBroker = try await InspectBinary.run(["list", "--store", location, "--format", "json"] + around)
        #expect(try byBroker.json().objects("records").map { $0.string("key") } == ["lagged"])
        let recent = try await InspectBinary.run([
            "list", "--store", location, "--format", "json", "--from", "\(now - Self.hour)ms",
        ])
        #expect(try recent.json().objects("records").map { $0.string("key") } == ["plain"])
        let dryRun = try await InspectBinary.run(["reset", "--store", location, "--namespace", "orders"] + around)
        #expect(dryRun.stdout.contains("would delete 1 completed record"), "\(dryRun.stdout)")
        #expect(
            dryRun.stdout.contains("by broker time; by completion time for records without one"),
            "\(dryRun.stdout)"
        )
        let help = try await InspectBinary.run(["reset", "--help"])
        #expect(help.stdout.contains("broker time"))
    }

    // MARK: The lag test

    enum ResetPath: String, CaseIterable, Sendable { case storeAPI, dedupInspect }

    @Test(
        "SQLite: a replay of broker range [T1, T2) re-applies exactly the messages published in it, though the consumer processed them hours later",
        arguments: [false, true],
        ResetPath.allCases
    )
    func laggedReplaySQLite(batch: Bool, reset: ResetPath) async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/dedup.sqlite"
        try await laggedReplay(try SQLiteDedupStore(path: path), location: "sqlite:\(path)", batch: batch, reset: reset)
    }

    @Test(
        "Redis: a replay of broker range [T1, T2) re-applies exactly the messages published in it, though the consumer processed them hours later",
        arguments: [false, true],
        ResetPath.allCases
    )
    func laggedReplayRedis(batch: Bool, reset: ResetPath) async throws {
        try await withRedisServer { server in
            let store = try RedisDedupStore(url: server.url(password: nil))
            try await laggedReplay(store, location: server.url(password: nil), batch: batch, reset: reset)
            await store.close()
        }
    }

    struct Message: Sendable {
        let id: String
        let publishedAt: Int64
    }

    func laggedReplay(_ store: any DedupStore, location: String, batch: Bool, reset: ResetPath) async throws {
        let now = SystemDedupClock().nowMilliseconds()
        // Published every 30 minutes from six hours ago to one hour ago; all processed now.
        let messages = (0...10).map {
            Message(id: "m-\($0)", publishedAt: now - 6 * Self.hour + Int64($0) * Self.hour / 2)
        }
        let t1 = messages[3].publishedAt
        let t2 = messages[7].publishedAt
        let ledger = Mutex<[String: Int]>([:])
        let consumer = try IdempotentConsumer(store: store, namespace: "billing")
        func deliver(_ messages: [Message]) async throws {
            if batch {
                let results = try await consumer.processBatch(
                    messages,
                    keyStrategy: .messageID { $0.id },
                    brokerTime: { Date(millisecondsSince1970: $0.publishedAt) }
                ) { message, _ in ledger.withLock { $0[message.id, default: 0] += 1 } }
                for result in results { _ = try result.get() }
            } else {
                for message in messages {
                    _ = try await consumer.process(
                        key: message.id,
                        brokerTime: Date(millisecondsSince1970: message.publishedAt)
                    ) { _ in
                        ledger.withLock { $0[message.id, default: 0] += 1 }
                    }
                }
            }
        }
        try await deliver(messages)
        #expect(ledger.withLock { $0 } == Dictionary(uniqueKeysWithValues: messages.map { ($0.id, 1) }))

        switch reset {
        case .storeAPI:
            let filter = RecordFilter(
                namespace: "billing",
                state: .completed,
                from: Date(millisecondsSince1970: t1),
                until: Date(millisecondsSince1970: t2)
            )
            let ids = try messages.map { try RecordID(namespace: "billing", key: $0.id) }
            #expect(try await store.delete(ids, matching: filter) == 4)
        case .dedupInspect:
            let run = try await InspectBinary.run(
                [
                    "reset", "--store", location, "--namespace", "billing", "--from", "\(t1)ms", "--until", "\(t2)ms",
                    "--yes", "--format", "json",
                ])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(try run.json().int("deleted") == 4)
        }

        try await deliver(messages)
        let applied = ledger.withLock { $0 }
        for message in messages {
            let expected = (t1..<t2).contains(message.publishedAt) ? 2 : 1
            #expect(
                applied[message.id] == expected,
                "\(message.id), published \(Timestamp.format(milliseconds: message.publishedAt))"
            )
        }
        #expect(applied.values.reduce(0, +) == messages.count + 4, "m-3 (at T1) to m-6 re-applied; m-7 (at T2) not")
    }
}
