import Dedup
import DedupTestKit
import Testing

/// The PostgreSQL store against the conformance suite, on the server's real clock.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("PostgreSQL store conformance")
struct PostgresConformanceTimingTests {
    /// Every rule a real-clock store can be held to, each in a schema of its own.
    @Test(arguments: DedupConformance.checks(manualClock: false))
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(PostgresConformanceHarness())
    }
}
