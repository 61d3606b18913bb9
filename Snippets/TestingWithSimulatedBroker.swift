// Tests of a consumer without a server: an at-least-once broker in virtual time, the in-memory
// store on the same clock, and a store that fails on demand. Put them in a test target that
// depends on the DedupTestKit product.

import Dedup
import DedupTestKit
import Synchronization
import Testing

// snippet.inMemory
@Test func aCrashedConsumersClaimIsTakenOverOnceItsLeasePasses() async throws {
    let clock = ManualDedupClock()
    let store = InMemoryDedupStore(clock: clock)
    let consumer = try IdempotentConsumer(store: store, namespace: "billing")

    // Another consumer claimed order-1 (with the default 30-second lease), then died.
    let order1 = try RecordID(namespace: "billing", key: "order-1")
    _ = try await store.claim(ClaimRequest(id: order1, lease: .seconds(30), retention: .seconds(86_400)))

    let held = try await consumer.process(key: "order-1") { _ in Issue.record("ran while held") }
    #expect(held.shouldAck == false)  // deferred: the message comes again later

    clock.advance(by: .seconds(30))  // the dead consumer's lease passes
    let retried = try await consumer.process(key: "order-1") { context in
        #expect(context.isTakeover && context.attempt == 2)
    }
    #expect(retried == .applied)

    let again = try await consumer.process(key: "order-1") { _ in Issue.record("ran twice") }
    #expect(again.shouldAck)  // a duplicate: acked, not run
}
// snippet.end

// snippet.broker
@Test func chargesEveryOrderOnce() async throws {
    let clock = ManualDedupClock()  // the broker moves it: 30-second leases pass in no time
    let store = InMemoryDedupStore(clock: clock)
    let consumer = try IdempotentConsumer(store: store, namespace: "billing")
    let broker = SimulatedBroker(configuration: .init(seed: 7, duplicateRate: 0.2, crashRate: 0.05), clock: clock)
    for index in 0..<500 { broker.publish(key: "order-\(index)") }

    let ledger = Mutex<[String: Int]>([:])  // charges per order: the side effect under test
    try await broker.run(consumers: 4) { delivery in
        let order = delivery.message.key
        if delivery.plannedCrash == .beforeSideEffect { return .crash }
        let outcome = try await consumer.process(key: order, brokerTime: delivery.message.publishedAt) { _ in
            ledger.withLock { $0[order, default: 0] += 1 }
        }
        if delivery.plannedCrash == .afterSideEffect { return .crash }  // died before its ack
        if case .deferred(let retryAfter) = outcome { return .retry(after: retryAfter) }
        return .ack
    }
    #expect(broker.counters.duplicatesInjected > 0 && broker.counters.crashes > 0)
    #expect(ledger.withLock { $0.count == 500 && $0.values.allSatisfy { $0 == 1 } })
}
// snippet.end

// snippet.faults
@Test func aStoreOutageIsNeverASilentSuccess() async throws {
    let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: ManualDedupClock()))
    let consumer = try IdempotentConsumer(store: store, namespace: "billing")

    store.fail(.claim, with: DedupError(.storeUnavailable, "connection refused"))
    let error = await #expect(throws: DedupError.self) {
        try await consumer.process(key: "order-1") { _ in Issue.record("ran without a claim") }
    }
    #expect(error?.code == .storeUnavailable)  // fail-closed: the message is not acked

    store.heal()
    store.fail(.complete, with: DedupError(.timeout, "no reply"), times: 2)
    #expect(try await consumer.process(key: "order-1") { _ in } == .applied)
    #expect(store.calls(.complete) == 3)  // the completion was retried with backoff
}
// snippet.end
