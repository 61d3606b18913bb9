import Dedup
import DedupTestKit
import Foundation
import Logging
import MetricsTestKit
import Testing

/// A failure is reported once (thrown, not also logged loudly), routine events do not flood the
/// log, and metric dimensions share one case style.
@Suite("Library manners")
struct LibraryMannersTests {
    let clock = ManualDedupClock()

    /// Lines at info level or above: what an operator's default log shows.
    private func loud(_ recorder: LogRecorder) -> [String] {
        recorder.all.filter { $0.level >= .info }.map { "\($0.level): \($0.message)" }
    }

    @Test("a store failure on claim is thrown, and logged at debug only")
    func claimFailureReportedOnce() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.storeUnavailable, "down"))
        let recorder = LogRecorder()
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", logger: recorder.logger())
        await #expect(throws: DedupError.self) { _ = try await consumer.process(key: "m-1") { _ in } }
        #expect(loud(recorder) == [])
        #expect(recorder.all.contains { $0.level == .debug && $0.message == "claim failed" })
    }

    @Test("a completion that keeps failing is thrown, and logged at debug only")
    func completionFailureReportedOnce() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.complete, with: DedupError(.storeUnavailable, "down"))
        let recorder = LogRecorder()
        var configuration = ConsumerConfiguration()
        configuration.completionBackoff = .milliseconds(1)
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            logger: recorder.logger()
        )
        await #expect(throws: DedupError.self) { _ = try await consumer.process(key: "m-1") { _ in } }
        #expect(loud(recorder) == [])
    }

    @Test("a takeover is counted, and logged at debug only")
    func takeoverIsQuiet() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let id = try RecordID(namespace: "orders", key: "m-1")
        _ = try await store.claim(ClaimRequest(id: id, lease: .seconds(1), retention: .seconds(60)))
        clock.advance(by: .seconds(2))
        let recorder = LogRecorder()
        let metrics = TestMetrics()
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            logger: recorder.logger(),
            metricsFactory: metrics
        )
        #expect(try await consumer.process(key: "m-1") { _ in } == .applied)
        #expect(
            try metrics.expectCounter("dedup.claims", [("namespace", "orders"), ("outcome", "takeover")]).totalValue
                == 1
        )
        #expect(loud(recorder) == [])
        #expect(recorder.all.contains { $0.level == .debug && $0.message == "took over an expired lease" })
    }

    @Test("store error codes in metrics are snake_case, like the claim outcomes")
    func metricCodesSnakeCase() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.storeUnavailable, "down"))
        let metrics = TestMetrics()
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", metricsFactory: metrics)
        _ = try? await consumer.process(key: "m-1") { _ in }
        #expect(
            try metrics.expectCounter("dedup.store.errors", [("namespace", "orders"), ("code", "store_unavailable")])
                .totalValue == 1
        )
    }
}
