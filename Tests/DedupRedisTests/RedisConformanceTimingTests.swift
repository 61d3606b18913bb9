import Dedup
import DedupTestKit
import DedupTestSupport
import Testing

/// The Redis store against the conformance suite, on the server's real clock.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("Redis store conformance")
struct RedisConformanceTimingTests {
    /// Every rule a real-clock store can be held to, each against a redis-server of its own.
    @Test(arguments: DedupConformance.checks(manualClock: false))
    func conforms(_ check: ConformanceCheck) async throws {
        try await withRedisServer { server in
            try await check.run(RedisConformanceHarness(server: server))
        }
    }
}
