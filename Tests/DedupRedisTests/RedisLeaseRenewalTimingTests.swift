import Dedup
import DedupRedis
import DedupTestKit
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// The real Redis store's leases stay renewed when every call is slow.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("Redis lease renewal under latency")
struct RedisLeaseRenewalTimingTests {
    @Test(
        "8 handlers of one consumer keep their leases when every Redis call takes a quarter of the lease; a rival never takes a key"
    )
    func slowRedisKeepsEveryLease() async throws {
        try await withRedisServer { server in
            let redis = try makeRedisStore(server.url)
            let slow = FaultInjectingDedupStore(redis)
            // The trial's 1 s lease, 333 ms renewal and 250 ms per call, five times longer each, so
            // a stall of the test process under the whole suite's load (over a second at times, on
            // 2 cores) stays inside the slack.
            slow.delay(by: .milliseconds(1250))
            var configuration = ConsumerConfiguration()
            configuration.lease = .seconds(5)
            configuration.renewalInterval = .milliseconds(1667)
            let consumer = try IdempotentConsumer(store: slow, namespace: "orders", configuration: configuration)
            // The rival claims straight from Redis, without the latency.
            let rival = try IdempotentConsumer(
                store: makeRedisStore(server.url),
                namespace: "orders",
                configuration: configuration
            )
            let keys = (0..<8).map { "m-\($0)" }
            let runs = HandlerRuns()

            let outcomes = try await withThrowingTaskGroup(of: (String, ProcessOutcome).self) { group in
                for key in keys {
                    group.addTask {
                        let outcome = try await consumer.process(key: key) { context in
                            runs.record("first:\(key)")
                            // Two leases long; the rival tries the key every 500 ms meanwhile.
                            for _ in 0..<20 {
                                try await Task.sleep(for: .milliseconds(500))
                                let answer = try await rival.process(key: key) { _ in runs.record("rival:\(key)") }
                                guard case .deferred = answer else {
                                    Issue.record("the rival got \(answer) for \(key) while its first handler ran")
                                    return
                                }
                            }
                            try context.checkLease()
                        }
                        return (key, outcome)
                    }
                }
                var outcomes: [String: ProcessOutcome] = [:]
                for try await (key, outcome) in group { outcomes[key] = outcome }
                return outcomes
            }
            #expect(outcomes.count == keys.count)
            #expect(outcomes.values.allSatisfy { $0 == .applied })
            #expect(runs.all.sorted() == keys.map { "first:\($0)" }.sorted())
            // A renewal round renews every due lease in one call.
            #expect(slow.calls(.renew) < 8 * 8, "renew calls: \(slow.calls(.renew))")
        }
    }
}

/// Every handler run, in order, shared between tasks.
private final class HandlerRuns: Sendable {
    private let runs = Mutex<[String]>([])
    func record(_ run: String) { runs.withLock { $0.append(run) } }
    var all: [String] { runs.withLock { $0 } }
}
