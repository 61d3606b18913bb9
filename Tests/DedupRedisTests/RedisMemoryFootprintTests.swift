import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

@Suite("Redis memory per record")
struct RedisMemoryFootprintTests {
    /// The target of issue 17: a completed record costs at most 1.3 times a bare key of the same
    /// name with a one-byte value and the same expiry, both measured on one server in one run.
    @Test(
        "100,000 completed records (the demo's keys, with broker times) cost at most 1.3× bare keys of the same names"
    )
    func completedRecordAgainstBareKey() async throws {
        try await withRedisServer { server in
            let footprint = try await RedisMemoryFootprint.measure(
                endpoint: RedisEndpoint(url: server.url),
                count: 100_000
            )
            print("Redis memory per record: \(footprint)")
            #expect(footprint.ratio <= 1.3, "\(footprint)")
        }
    }
}
