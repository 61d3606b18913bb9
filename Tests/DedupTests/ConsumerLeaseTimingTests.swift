import Dedup
import DedupTestKit
import Foundation
import MetricsTestKit
import Testing

/// The consumer's lease renewal on a real clock. Like every suite whose name ends in `TimingTests`,
/// it runs after the rest of the suite in a test process of its own (`scripts/test`): its verdict
/// depends on the process getting a thread within seconds, which other tests' CPU-bound work
/// running beside it in the same process cannot promise.
@Suite("IdempotentConsumer lease renewal on the real clock")
struct ConsumerLeaseTimingTests {
    @Test("the lease is renewed while a long handler runs")
    func leaseRenewal() async throws {
        let store = InMemoryDedupStore(clock: SystemDedupClock())
        let metrics = TestMetrics()
        var configuration = ConsumerConfiguration()
        // A lease long enough that a renewal late by seconds on a loaded machine still lands in it
        // (one confirmed after the lease's end would lose it, and no renewal would follow).
        configuration.lease = .seconds(5)
        configuration.renewalInterval = .milliseconds(100)
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            metricsFactory: metrics
        )
        let outcome = try await consumer.process(key: "slow") { context in
            let initial = try #require(context.lease?.leaseUntil)
            // Wait for the store to show the extended lease: the behaviour under test.
            while try await store.record(for: #require(context.id))?.leaseUntil ?? initial <= initial {
                try #require(!context.isLeaseLost, "the lease was lost before a renewal was confirmed")
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(!context.isLeaseLost)
        }
        #expect(outcome == .applied)
        #expect(try metrics.expectCounter("dedup.lease.renewals", [("namespace", "orders")]).totalValue >= 1)
    }

    @Test("a batch keeps every lease renewed until the batch completion, so no message of it is taken over")
    func batchLeasesRenewedUntilCompletion() async throws {
        let store = InMemoryDedupStore(clock: SystemDedupClock())
        var configuration = ConsumerConfiguration()
        // The test process stalls for over a second at times while the whole suite runs on 2 cores
        // (child processes, other tests): a lease of 5 s leaves room for that, since a renewal
        // confirmed after the lease's end loses the lease.
        configuration.lease = .seconds(5)
        configuration.renewalInterval = .milliseconds(100)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let other = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(["k1", "k2"], keyStrategy: KeyStrategy<String>.messageID { $0 }) {
            message,
            _ in
            ledger.record("A:\(message)")
            // Outlast the lease (the passing of time is what is under test), then race for the
            // message whose lease would have passed without renewal: k2 before its handler ran,
            // k1 after its handler ran but before the batch completion.
            try await Task.sleep(for: .milliseconds(5500))
            let rival = message == "k1" ? "k2" : "k1"
            let outcome = try await other.process(key: rival) { _ in ledger.record("B:\(rival)") }
            guard case .deferred = outcome else {
                Issue.record("\(rival) was not held by the batch: \(outcome)")
                return
            }
        }
        #expect(try results.map { try $0.get() } == [.applied, .applied])
        #expect(ledger.all == ["A:k1", "A:k2"])
    }
}
