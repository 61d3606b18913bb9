import Dedup
import DedupPostgres
import DedupRedis
import DedupSQLite
import DedupStoreLocator
import DedupTestKit
import Foundation
import Logging
import Synchronization

/// The demo's knobs.
public struct DemoOptions: Sendable {
    /// Messages published to the topic.
    public var messages = 10_000
    /// The share of messages the broker delivers twice (a producer retry, a rebalance).
    public var duplicateRate = 0.15
    /// The share of deliveries whose consumer dies mid-handler.
    public var crashRate = 0.02
    /// Consumers running at once.
    public var consumers = 4
    /// Where the dedup records live.
    public var store = StoreLocation.sqlite(path: "dedup-demo.sqlite")
    /// Seeds the broker's duplicates and crashes.
    public var seed: UInt64 = 2026
    /// Whether the library's log lines (leases taken over, migrations applied) show; otherwise
    /// only its warnings and errors do.
    public var verbose = false

    /// The defaults: 10,000 messages, 15% duplicates, 2% crashes, 4 consumers, SQLite in this folder.
    public init() {}
}

/// What the demo saw, and whether every message was applied exactly once.
public struct DemoReport: Sendable {
    /// Messages published.
    public var published = 0
    /// Handoffs from the broker to a consumer, replays included.
    public var delivered = 0
    /// Extra copies the broker injected.
    public var duplicatesInjected = 0
    /// Handler runs whose effect was recorded.
    public var applied = 0
    /// Deliveries skipped because the key was completed.
    public var duplicatesSkipped = 0
    /// Deliveries deferred because another consumer had the key in flight.
    public var deferred = 0
    /// Consumers that died mid-handler.
    public var crashes = 0
    /// Claims that took over a dead consumer's passed lease.
    public var takeovers = 0
    /// Messages replayed from the start timestamp.
    public var replayed = 0
    /// Effects recorded during the replay (should be none).
    public var appliedDuringReplay = 0
    /// Consumers that died after running the handler's effect and before writing the completion.
    public var crashesAfterEffect = 0
    /// Whether the effect commits with the completion (SQLite's transactional mode): then a crash
    /// after the effect rolls it back, and nothing may be applied twice.
    public var isTransactional = false
    /// Messages applied more than once, each extra application explained by a crash after the
    /// effect on an earlier run (the documented at-least-once window).
    public var reappliedMessages = 0
    /// Applications beyond the first of ``reappliedMessages``.
    public var extraApplications = 0
    /// Messages whose effect count is not what the crashes explain (a broken guarantee), with the count.
    public var violations: [(messageID: String, effects: Int)] = []
    /// Where the run left its data, and how to remove it.
    public var data = DemoDataLocation(description: "", removalCommand: "")

    /// `true` when every published message has exactly one effect.
    public var isExactlyOnce: Bool { holdsOutsideAtLeastOnceWindow && extraApplications == 0 }
    /// `true` when every published message has exactly one effect, apart from re-applications after
    /// a crash between effect and completion.
    public var holdsOutsideAtLeastOnceWindow: Bool { violations.isEmpty && published > 0 }
}

/// Runs the demo: publish, consume with duplicates and crashes, replay, then count effects.
public enum DemoScenario {
    private struct SimulatedCrash: Error {}

    /// Counters shared by the consumer tasks.
    private final class Tally: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        func add(_ name: String, _ amount: Int = 1) { counts.withLock { $0[name, default: 0] += amount } }
        subscript(_ name: String) -> Int { counts.withLock { $0[name, default: 0] } }
        var all: [String: Int] { counts.withLock { $0 } }
    }

    /// A run's namespace (and the stream demo's group and folder name): its start time, and a random
    /// part, because two runs that start in the same millisecond must share neither records on one
    /// store nor a folder (one's cleanup would remove the other's).
    static func runName(startedAt milliseconds: Int64) -> String {
        "demo-\(milliseconds)-\(String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16))"
    }

    /// Runs the scenario and reports. `progress` gets a line now and then.
    public static func run(
        _ options: DemoOptions,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> DemoReport {
        // A namespace of its own per run, so a store reused across runs starts empty for the demo.
        let namespace = runName(startedAt: SystemDedupClock().nowMilliseconds())
        let tally = Tally()
        // Per message ID: crashes after the handler's effect ran (the effect stays without a transaction).
        let crashesAfterEffect = Tally()
        var logger = Logger(label: "dedup")
        logger.logLevel = options.verbose ? .debug : .warning
        let ledger: any EffectLedger
        let data: DemoDataLocation
        let store: any DedupStore
        let broker: SimulatedBroker
        var lease = Duration.seconds(30)

        var brokerConfiguration = SimulatedBroker.Configuration()
        brokerConfiguration.seed = options.seed
        brokerConfiguration.duplicateRate = options.duplicateRate
        brokerConfiguration.crashRate = options.crashRate
        brokerConfiguration.duplicateDelay = .milliseconds(50)

        switch options.store {
        case .sqlite(let path):
            // Virtual time: leases of 30 s pass in an instant when nothing else is due.
            let clock = ManualDedupClock(startingAt: SystemDedupClock().nowMilliseconds())
            var configuration = SQLiteDedupStore.Configuration()
            configuration.clock = clock
            let existedBefore = FileManager.default.fileExists(atPath: path)
            let sqlite = try SQLiteDedupStore(path: path, configuration: configuration, logger: logger)
            store = sqlite
            ledger = try await SQLiteEffectLedger(store: sqlite, run: namespace)
            data = .sqlite(
                path: path,
                existedBefore: existedBefore,
                namespace: namespace,
                effectsTable: SQLiteEffectLedger.table
            )
            broker = SimulatedBroker(configuration: brokerConfiguration, clock: clock)
        case .redis(let url):
            // Redis leases run on the server's clock, so the broker runs in real time with short leases.
            let endpoint = try RedisEndpoint(url: url)
            let redisConfiguration = RedisDedupStore.Configuration()
            store = try RedisDedupStore(endpoint: endpoint, configuration: redisConfiguration, logger: logger)
            data = .redis(
                location: options.store,
                endpoint: endpoint,
                keyPrefix: redisConfiguration.keyPrefix,
                namespace: namespace
            )
            ledger = MemoryEffectLedger()
            lease = .milliseconds(400)
            brokerConfiguration.redeliveryDelay = .milliseconds(50)
            brokerConfiguration.crashRedeliveryDelay = .milliseconds(500)
            broker = SimulatedBroker(configuration: brokerConfiguration)
        case .postgres(let url):
            // As Redis: leases on the server's clock, so the broker runs in real time with short
            // leases; the effect commits with the completion (transactional mode), as in SQLite.
            let parsed = try PostgresURL(url)
            let postgres = try await PostgresDedupStore(url: url, logger: logger)
            store = postgres
            ledger = try await PostgresEffectLedger(store: postgres, run: namespace)
            data = .postgres(
                location: options.store.description,
                url: parsed,
                schema: postgres.configuration.schema,
                namespace: namespace,
                table: PostgresEffectLedger.table
            )
            lease = .milliseconds(400)
            brokerConfiguration.redeliveryDelay = .milliseconds(50)
            brokerConfiguration.crashRedeliveryDelay = .milliseconds(500)
            broker = SimulatedBroker(configuration: brokerConfiguration)
        }

        var configuration = ConsumerConfiguration()
        configuration.lease = lease
        configuration.renewalInterval = lease / 3
        configuration.minimumRetryDelay = .milliseconds(20)
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: namespace,
            configuration: configuration,
            logger: logger
        )

        let startedAt = broker.now
        for number in 0..<options.messages {
            _ = broker.publish(key: "order-\(number)", payload: Data("amount=\(number % 997)".utf8))
        }
        progress("published \(options.messages) messages to the simulated topic")

        let leaseDuration = lease
        let handler: @Sendable (SimulatedBroker.Delivery) async throws -> SimulatedBroker.Ack = { delivery in
            let acked = try await handle(
                delivery,
                consumer: consumer,
                store: store,
                ledger: ledger,
                tally: tally,
                crashesAfterEffect: crashesAfterEffect,
                lease: leaseDuration
            )
            let done = tally["settled"] + 1
            tally.add("settled")
            if done % 2_000 == 0 { progress("settled \(done) deliveries") }
            return acked
        }

        try await broker.run(consumers: options.consumers, handler: handler)
        let appliedBeforeReplay = try await ledger.totalEffects()
        progress("first pass done: \(appliedBeforeReplay) effects; replaying the topic from \(isoString(startedAt))")

        let replayed = broker.replay(from: startedAt)
        try await broker.run(consumers: options.consumers, handler: handler)
        let effects = try await ledger.effectCounts()

        var report = DemoReport()
        let counters = broker.counters
        report.published = counters.published
        report.delivered = counters.delivered
        report.duplicatesInjected = counters.duplicatesInjected
        report.crashes = counters.crashes
        report.replayed = replayed
        report.applied = effects.values.reduce(0, +)
        report.appliedDuringReplay = report.applied - appliedBeforeReplay
        report.duplicatesSkipped = tally["duplicate"]
        report.deferred = tally["deferred"]
        report.takeovers = tally["takeover"]
        report.data = data
        if let redis = store as? RedisDedupStore, redis.isCluster {
            report.data = .redisCluster(
                location: options.store,
                keyPrefix: redis.configuration.keyPrefix,
                namespace: namespace
            )
        }
        report.isTransactional = ledger is any TransactionalEffectLedger
        let afterEffect = crashesAfterEffect.all
        report.crashesAfterEffect = afterEffect.values.reduce(0, +)
        for message in broker.messages {
            let count = effects[message.id, default: 0]
            // Without a transaction each crash after the effect leaves one application behind and
            // the redelivery applies the message again: expected, and nothing else is.
            let expected = 1 + (report.isTransactional ? 0 : afterEffect[message.id, default: 0])
            if count != expected {
                report.violations.append((message.id, count))
            } else if count > 1 {
                report.reappliedMessages += 1
                report.extraApplications += count - 1
            }
        }
        if case .sqlite = options.store { (store as? SQLiteDedupStore)?.close() }
        (store as? PostgresDedupStore)?.close()
        return report
    }

    /// One delivery: a planned crash, or processing through the consumer.
    private static func handle(
        _ delivery: SimulatedBroker.Delivery,
        consumer: IdempotentConsumer,
        store: any DedupStore,
        ledger: any EffectLedger,
        tally: Tally,
        crashesAfterEffect: Tally,
        lease: Duration
    ) async throws -> SimulatedBroker.Ack {
        let message = delivery.message
        switch delivery.plannedCrash {
        case .beforeSideEffect?:
            // The consumer claimed the key, started the handler and died: its claim stays in flight,
            // unrenewed, until the lease passes and a redelivery takes it over.
            let id = try RecordID(namespace: consumer.namespace, key: message.key)
            _ = try await store.claim(ClaimRequest(id: id, lease: lease, retention: consumer.configuration.retention))
            return .crash
        case .afterSideEffect?:
            if let transactional = ledger as? any TransactionalEffectLedger {
                // The effect is written in the store's transaction; the crash rolls both back.
                do {
                    _ = try await transactional.applyTransactionally(message, consumer: consumer) {
                        crashesAfterEffect.add(message.id)
                        throw SimulatedCrash()
                    }
                } catch is SimulatedCrash {}
                return .crash
            }
            // Without a transaction the consumer claims the key, runs the effect and dies before
            // completing: the effect stays, the claim lapses unrenewed, and the redelivery that takes
            // it over applies the message again (the at-least-once window the README documents).
            let id = try RecordID(namespace: consumer.namespace, key: message.key)
            let answer = try await store.claim(
                ClaimRequest(
                    id: id,
                    lease: lease,
                    retention: consumer.configuration.retention,
                    brokerTime: message.publishedAt
                )
            )
            if case .acquired(let claimed) = answer {
                try await ledger.record(messageID: message.id, fencingToken: claimed.fencingToken)
                crashesAfterEffect.add(message.id)
            }
            return .crash
        case nil:
            break
        }
        let outcome: ProcessOutcome
        let takeover: Bool
        if let transactional = ledger as? any TransactionalEffectLedger {
            (outcome, takeover) = try await transactional.applyTransactionally(message, consumer: consumer) {}
        } else {
            let took = Mutex(false)
            outcome = try await consumer.process(key: message.key, brokerTime: message.publishedAt) { context in
                took.withLock { $0 = context.isTakeover }
                try await ledger.record(messageID: message.id, fencingToken: context.fencingToken)
            }
            takeover = took.withLock { $0 }
        }
        switch outcome {
        case .applied, .bypassed:
            if takeover { tally.add("takeover") }
            return .ack
        case .duplicate:
            tally.add("duplicate")
            return .ack
        case .deferred(let retryAfter):
            tally.add("deferred")
            return .retry(after: retryAfter)
        }
    }

    static func isoString(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
