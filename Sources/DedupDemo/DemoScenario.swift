import Dedup
import DedupSQLite
import DedupStoreLocator
import DedupTestKit
import Foundation
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
    /// Crashes planned after the side effect that the demo moved before it, because the store has
    /// no transaction to put the effect in (see the README: such crashes re-run the handler).
    public var crashesMovedBeforeEffect = 0
    /// Messages whose effect count is not exactly one, with the count.
    public var violations: [(messageID: String, effects: Int)] = []

    /// `true` when every published message has exactly one effect.
    public var isExactlyOnce: Bool { violations.isEmpty && published > 0 }
}

/// Runs the demo: publish, consume with duplicates and crashes, replay, then count effects.
public enum DemoScenario {
    private struct SimulatedCrash: Error {}

    /// Counters shared by the consumer tasks.
    private final class Tally: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        func add(_ name: String, _ amount: Int = 1) { counts.withLock { $0[name, default: 0] += amount } }
        subscript(_ name: String) -> Int { counts.withLock { $0[name, default: 0] } }
    }

    /// Runs the scenario and reports. `progress` gets a line now and then.
    public static func run(_ options: DemoOptions, progress: @escaping @Sendable (String) -> Void) async throws -> DemoReport {
        // A namespace of its own per run, so a store reused across runs starts empty for the demo.
        let namespace = "demo-\(SystemDedupClock().nowMilliseconds())"
        let tally = Tally()
        let ledger: any EffectLedger
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
            let sqlite = try SQLiteDedupStore(path: path, configuration: configuration)
            store = sqlite
            ledger = try await SQLiteEffectLedger(store: sqlite, run: namespace)
            broker = SimulatedBroker(configuration: brokerConfiguration, clock: clock)
        case .redis:
            // Redis leases run on the server's clock, so the broker runs in real time with short leases.
            store = try options.store.open()
            ledger = MemoryEffectLedger()
            lease = .milliseconds(400)
            brokerConfiguration.redeliveryDelay = .milliseconds(50)
            brokerConfiguration.crashRedeliveryDelay = .milliseconds(500)
            broker = SimulatedBroker(configuration: brokerConfiguration)
        }

        var configuration = ConsumerConfiguration()
        configuration.lease = lease
        configuration.renewalInterval = lease / 3
        configuration.minimumRetryDelay = .milliseconds(20)
        let consumer = try IdempotentConsumer(store: store, namespace: namespace, configuration: configuration)

        let startedAt = broker.now
        for number in 0..<options.messages {
            _ = broker.publish(key: "order-\(number)", payload: Data("amount=\(number % 997)".utf8))
        }
        progress("published \(options.messages) messages to the simulated topic")

        let leaseDuration = lease
        let handler: @Sendable (SimulatedBroker.Delivery) async throws -> SimulatedBroker.Ack = { delivery in
            let acked = try await handle(
                delivery, consumer: consumer, store: store, ledger: ledger, tally: tally, lease: leaseDuration
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
        report.crashesMovedBeforeEffect = tally["crash-moved-before-effect"]
        for message in broker.messages {
            let count = effects[message.id, default: 0]
            if count != 1 { report.violations.append((message.id, count)) }
        }
        if case .sqlite = options.store { (store as? SQLiteDedupStore)?.close() }
        return report
    }

    /// One delivery: a planned crash, or processing through the consumer.
    private static func handle(
        _ delivery: SimulatedBroker.Delivery, consumer: IdempotentConsumer, store: any DedupStore,
        ledger: any EffectLedger, tally: Tally, lease: Duration
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
            if let sqliteLedger = ledger as? SQLiteEffectLedger {
                // The effect is written in the store's transaction; the crash rolls both back.
                do {
                    _ = try await sqliteLedger.applyTransactionally(message, consumer: consumer) { _ in
                        throw SimulatedCrash()
                    }
                } catch is SimulatedCrash {}
                return .crash
            }
            // Without a transaction, a crash after the effect re-runs the handler (at-least-once);
            // the demo dies before the effect instead, and says so in its summary.
            let id = try RecordID(namespace: consumer.namespace, key: message.key)
            _ = try await store.claim(ClaimRequest(id: id, lease: lease, retention: consumer.configuration.retention))
            tally.add("crash-moved-before-effect")
            return .crash
        case nil:
            break
        }
        let outcome: ProcessOutcome
        let takeover: Bool
        if let sqliteLedger = ledger as? SQLiteEffectLedger {
            (outcome, takeover) = try await sqliteLedger.applyTransactionally(message, consumer: consumer) { _ in }
        } else {
            let took = Mutex(false)
            outcome = try await consumer.process(key: message.key) { context in
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
