import DedupTestSupport
import Dedup
import DedupTestKit
import Testing

@Suite("Redis store conformance")
struct RedisConformanceTests {
    /// Every rule a real-clock store can be held to, each against a redis-server of its own.
    @Test(arguments: DedupConformance.checks(manualClock: false))
    func conforms(_ check: ConformanceCheck) async throws {
        try await withRedisServer { server in
            try await check.run(RedisConformanceHarness(server: server))
        }
    }
}
