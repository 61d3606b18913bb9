import Dedup
import DedupTestKit
import Foundation
import Synchronization
import Testing

/// Every delivery a handler saw, in order.
private final class DeliveryLog: Sendable {
    private let entries = Mutex<[SimulatedBroker.Delivery]>([])
    func append(_ delivery: SimulatedBroker.Delivery) { entries.withLock { $0.append(delivery) } }
    var all: [SimulatedBroker.Delivery] { entries.withLock { $0 } }
}

private struct HandlerFailure: Error {}

@Suite("SimulatedBroker")
struct SimulatedBrokerTests {
    @Test("a nacked or retried message is redelivered, after the configured delay, until it is acked")
    func redeliveryUntilAck() async throws {
        let clock = ManualDedupClock()
        let broker = SimulatedBroker(configuration: .init(redeliveryDelay: .seconds(5)), clock: clock)
        let message = broker.publish(key: "order-1", payload: Data("{}".utf8))
        let log = DeliveryLog()
        try await broker.run { delivery in
            log.append(delivery)
            switch delivery.deliveryCount {
            case 1: return .nack
            case 2: return .retry(after: .seconds(12))
            default: return .ack
            }
        }
        let deliveries = log.all
        #expect(deliveries.map(\.message) == [message, message, message])
        #expect(deliveries.map(\.deliveryCount) == [1, 2, 3])
        #expect(deliveries.map(\.isRedelivery) == [false, true, true])
        #expect(Set(deliveries.map(\.copy)).count == 1)
        #expect(deliveries.allSatisfy { $0.reason == .published })
        let times = deliveries.map { $0.deliveredAt.millisecondsSince1970 }
        #expect(times[1] - times[0] == 5_000)
        #expect(times[2] - times[1] == 12_000)
        let counters = broker.counters
        #expect(counters.delivered == 3)
        #expect(counters.redeliveries == 2)
        #expect(counters.negativelyAcknowledged == 2)
        #expect(counters.acknowledged == 1)
        #expect(broker.pendingCount == 0)
    }

    @Test("stepping by hand: a nacked copy is not due again before its delay")
    func steppingByHand() async throws {
        let clock = ManualDedupClock()
        let broker = SimulatedBroker(configuration: .init(redeliveryDelay: .seconds(5)), clock: clock)
        broker.publish(key: "a")
        broker.publish(key: "b")
        let first = try #require(broker.nextDelivery())
        let second = try #require(broker.nextDelivery())
        #expect([first.message.key, second.message.key] == ["a", "b"])
        #expect(broker.nextDelivery() == nil)
        broker.settle(first, with: .nack)
        broker.settle(second, with: .ack)
        #expect(broker.nextDelivery() == nil)
        #expect(broker.pendingCount == 1)
        clock.advance(by: .milliseconds(4_999))
        #expect(broker.nextDelivery() == nil)
        clock.advance(by: .milliseconds(1))
        let again = try #require(broker.nextDelivery())
        #expect(again.message == first.message && again.deliveryCount == 2)
        broker.settle(again, with: .ack)
        #expect(broker.pendingCount == 0)
    }

    @Test("duplicates are injected at the configured rate, the same ones for the same seed")
    func duplicateRate() async throws {
        func duplicatedOffsets(seed: UInt64) async throws -> (Set<Int>, SimulatedBroker.Counters) {
            let broker = SimulatedBroker(
                configuration: .init(seed: seed, duplicateRate: 0.1),
                clock: ManualDedupClock()
            )
            for index in 0..<10_000 { broker.publish(key: "k-\(index)") }
            let log = DeliveryLog()
            try await broker.run { delivery in
                log.append(delivery)
                return .ack
            }
            let deliveries = log.all
            let duplicated = Set(deliveries.filter { $0.reason == .injectedDuplicate }.map(\.message.offset))
            var perMessage: [Int: Int] = [:]
            for delivery in deliveries { perMessage[delivery.message.offset, default: 0] += 1 }
            // Every message arrives once, plus once more exactly when a duplicate was injected.
            #expect(perMessage.count == 10_000)
            #expect(perMessage.allSatisfy { offset, count in count == (duplicated.contains(offset) ? 2 : 1) })
            return (duplicated, broker.counters)
        }
        let (first, counters) = try await duplicatedOffsets(seed: 7)
        #expect((900...1_100).contains(first.count), "\(first.count) duplicates for a rate of 10%")
        #expect(counters.duplicatesInjected == first.count)
        #expect(counters.delivered == 10_000 + first.count)
        #expect(counters.acknowledged == counters.delivered)
        let (again, _) = try await duplicatedOffsets(seed: 7)
        #expect(again == first)
        let (other, _) = try await duplicatedOffsets(seed: 8)
        #expect(other != first)
        #expect((900...1_100).contains(other.count))
    }

    @Test("an injected duplicate with no delay comes right behind its original")
    func duplicateOrder() throws {
        let broker = SimulatedBroker(configuration: .init(duplicateRate: 1), clock: ManualDedupClock())
        broker.publish(key: "a")
        broker.publish(key: "b")
        let keys = (0..<4).compactMap { _ in broker.nextDelivery() }.map { "\($0.message.key):\($0.reason.rawValue)" }
        #expect(keys == ["a:published", "a:injected_duplicate", "b:published", "b:injected_duplicate"])
    }

    @Test(
        "a consumer that crashes mid-handler gets the message redelivered after the crash delay, to its next incarnation"
    )
    func crashRedelivers() async throws {
        let clock = ManualDedupClock()
        let broker = SimulatedBroker(configuration: .init(crashRedeliveryDelay: .seconds(30)), clock: clock)
        for key in ["a", "b", "c"] { broker.publish(key: key) }
        let log = DeliveryLog()
        try await broker.run { delivery in
            log.append(delivery)
            return delivery.message.key == "b" && delivery.deliveryCount == 1 ? .crash : .ack
        }
        let deliveries = log.all
        #expect(deliveries.map(\.message.key) == ["a", "b", "c", "b"])
        #expect(deliveries.map(\.consumer.incarnation) == [0, 0, 1, 1])
        #expect(deliveries[3].deliveryCount == 2)
        #expect(
            deliveries[3].deliveredAt.millisecondsSince1970 - deliveries[1].deliveredAt.millisecondsSince1970 == 30_000
        )
        #expect(broker.counters.crashes == 1)
        #expect(broker.counters.redeliveries == 1)
        #expect(broker.counters.acknowledged == 3)
    }

    @Test("planned crashes follow the seeded rate, are the same for the same seed, and every message is still acked")
    func plannedCrashes() async throws {
        func run(seed: UInt64) async throws -> ([String], SimulatedBroker.Counters) {
            let broker = SimulatedBroker(configuration: .init(seed: seed, crashRate: 0.2), clock: ManualDedupClock())
            for index in 0..<2_000 { broker.publish(key: "k-\(index)") }
            let log = DeliveryLog()
            try await broker.run { delivery in
                log.append(delivery)
                return delivery.plannedCrash == nil ? .ack : .crash
            }
            let plan = log.all.filter { $0.plannedCrash != nil }.map {
                "\($0.message.key)#\($0.deliveryCount):\($0.plannedCrash!.rawValue)"
            }
            return (plan, broker.counters)
        }
        let (plan, counters) = try await run(seed: 3)
        // About 2,000 × 0.2 / (1 - 0.2) = 500 crashes, counting crashes of redeliveries.
        #expect((400...600).contains(counters.crashes), "\(counters.crashes) crashes")
        #expect(counters.crashes == plan.count)
        #expect(counters.acknowledged == 2_000)
        let before = plan.filter { $0.hasSuffix(SimulatedBroker.CrashPoint.beforeSideEffect.rawValue) }.count
        #expect(Double(before) / Double(plan.count) > 0.35 && Double(before) / Double(plan.count) < 0.65)
        let (again, _) = try await run(seed: 3)
        #expect(again == plan)
    }

    @Test("replay from a timestamp redelivers exactly the messages published at or after it")
    func replayFromTimestamp() async throws {
        let clock = ManualDedupClock()
        let broker = SimulatedBroker(clock: clock)
        var published: [SimulatedBroker.Message] = []
        for index in 0..<10 {
            published.append(broker.publish(key: "k-\(index)"))
            clock.advance(by: .seconds(1))
        }
        // A backlog laid out without waiting: the same timestamp as message 4, and one before it.
        published.append(broker.publish(key: "same-time", at: published[4].publishedAt))
        published.append(broker.publish(key: "earlier", at: published[4].publishedAt.addingTimeInterval(-0.001)))
        try await broker.run { _ in .ack }

        let log = DeliveryLog()
        let replayed = broker.replay(from: published[4].publishedAt)
        try await broker.run { delivery in
            log.append(delivery)
            return .ack
        }
        let expected = published.filter { $0.publishedAt >= published[4].publishedAt }
        #expect(replayed == expected.count)
        #expect(expected.map(\.key) == ["k-4", "k-5", "k-6", "k-7", "k-8", "k-9", "same-time"])
        #expect(log.all.map(\.message) == expected)
        #expect(log.all.allSatisfy { $0.reason == .replay && $0.deliveryCount == 1 })
        #expect(broker.counters.replayed == expected.count)
        #expect(broker.replay(from: broker.now.addingTimeInterval(1)) == 0)
    }

    @Test("several consumers share the work; the run ends when every copy is acked")
    func concurrentConsumers() async throws {
        let broker = SimulatedBroker(configuration: .init(seed: 11, duplicateRate: 0.2), clock: ManualDedupClock())
        for index in 0..<500 { broker.publish(key: "k-\(index)") }
        let log = DeliveryLog()
        try await broker.run(consumers: 4) { delivery in
            log.append(delivery)
            await Task.yield()
            return delivery.deliveryCount == 1 && delivery.message.offset.isMultiple(of: 10) ? .nack : .ack
        }
        let counters = broker.counters
        #expect(counters.acknowledged == 500 + counters.duplicatesInjected)
        #expect(Set(log.all.map(\.id)).count == log.all.count)
        #expect(log.all.allSatisfy { (0..<4).contains($0.consumer.index) })
        #expect(broker.pendingCount == 0)
    }

    @Test("a copy that is never acked goes to the dead letters after the maximum deliveries")
    func deadLetters() async throws {
        let broker = SimulatedBroker(configuration: .init(maximumDeliveries: 3), clock: ManualDedupClock())
        let poison = broker.publish(key: "poison")
        broker.publish(key: "fine")
        try await broker.run { delivery in delivery.message == poison ? .nack : .ack }
        #expect(broker.deadLetters == [poison])
        #expect(broker.counters.deadLettered == 1)
        #expect(broker.counters.delivered == 4)
    }

    @Test("a handler error ends the run and leaves its delivery queued")
    func handlerError() async throws {
        let broker = SimulatedBroker(clock: ManualDedupClock())
        broker.publish(key: "a")
        await #expect(throws: HandlerFailure.self) {
            try await broker.run(consumers: 2) { _ in throw HandlerFailure() }
        }
        #expect(broker.pendingCount == 1)
        try await broker.run { _ in .ack }
        #expect(broker.pendingCount == 0)
        #expect(broker.counters.acknowledged == 1)
    }

    @Test("on the system clock a redelivery really waits its delay")
    func realTime() async throws {
        let broker = SimulatedBroker(configuration: .init(redeliveryDelay: .milliseconds(80)))
        broker.publish(key: "a")
        let log = DeliveryLog()
        try await broker.run { delivery in
            log.append(delivery)
            return delivery.deliveryCount == 1 ? .nack : .ack
        }
        let times = log.all.map { $0.deliveredAt.millisecondsSince1970 }
        #expect(times.count == 2)
        #expect(times[1] - times[0] >= 80)
    }

    @Test("IdempotentConsumer behind the broker applies every message once through duplicates, crashes and a replay")
    func idempotentConsumerEndToEnd() async throws {
        let clock = ManualDedupClock()
        let store = InMemoryDedupStore(clock: clock)
        var configuration = ConsumerConfiguration()
        configuration.lease = .seconds(10)
        configuration.renewalInterval = nil
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let broker = SimulatedBroker(
            configuration: .init(seed: 5, duplicateRate: 0.15, crashRate: 0.05, crashRedeliveryDelay: .seconds(30)),
            clock: clock
        )
        for index in 0..<1_000 {
            broker.publish(key: "order-\(index)")
            clock.advance(by: .milliseconds(100))
        }
        let effects = Mutex<[String: Int]>([:])
        let handler: @Sendable (SimulatedBroker.Delivery) async throws -> SimulatedBroker.Ack = { delivery in
            let key = delivery.message.key
            if delivery.plannedCrash == .beforeSideEffect {
                // The consumer claimed the key and died: its lease is abandoned in the store.
                let id = try RecordID(namespace: "orders", key: key)
                _ = try await store.claim(ClaimRequest(id: id, lease: .seconds(10), retention: .seconds(3600)))
                return .crash
            }
            let outcome = try await consumer.process(key: key) { _ in
                effects.withLock { $0[key, default: 0] += 1 }
            }
            if case .deferred(let retryAfter) = outcome { return .retry(after: retryAfter) }
            return .ack
        }
        try await broker.run(consumers: 3, handler: handler)
        broker.replay(from: broker.messages[500].publishedAt)
        try await broker.run(consumers: 3, handler: handler)

        let counters = broker.counters
        #expect(counters.duplicatesInjected > 100)
        #expect(counters.crashes > 10)
        #expect(counters.replayed == 500)
        let applied = effects.withLock { $0 }
        #expect(applied.count == 1_000)
        #expect(applied.values.allSatisfy { $0 == 1 })
    }
}
