import DedupTestKit
import DedupTestSupport
import Testing

/// The Redis store against the conformance suite on a real Redis Cluster (three primaries, a
/// replica each), on the servers' real clocks. One cluster serves every check, each check's stores
/// with a key prefix of their own, so their keys spread over all the primaries.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("Redis store conformance on a cluster")
struct RedisClusterConformanceTimingTests {
    /// Every rule a real-clock store can be held to; the checks run concurrently, as the
    /// single-server suite's do, and each failure names its rule.
    @Test func conformsOnACluster() async throws {
        try await withRedisCluster { cluster in
            let harness = RedisConformanceHarness(cluster: cluster)
            await withTaskGroup(of: Void.self) { group in
                for check in DedupConformance.checks(manualClock: false) {
                    group.addTask {
                        do {
                            try await check.run(harness)
                        } catch {
                            Issue.record("\(check.name): \(error)")
                        }
                    }
                }
            }
        }
    }
}
