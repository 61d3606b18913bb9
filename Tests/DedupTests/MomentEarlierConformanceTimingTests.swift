import Dedup
import DedupTestKit
import Foundation
import Testing

/// The in-memory store on the real clock, dating every fresh lease a few milliseconds before its
/// record, as the store contract allows and as `RedisDedupStore` does (its lease is dated by the server's
/// `TIME` read just before the `SET` that creates the record).
struct EarlyDatingStore: ForwardingStore {
    let base = InMemoryDedupStore()
    /// How much earlier than the record a fresh lease says it was claimed.
    static let earlier: TimeInterval = 0.005

    private func earlier(_ answer: ClaimAnswer) -> ClaimAnswer {
        guard case .acquired(var lease) = answer, !lease.isTakeover else { return answer }
        lease.leaseUntil -= Self.earlier
        lease.claimedAt = lease.claimedAt.map { $0 - Self.earlier }
        return .acquired(lease)
    }

    func claim(_ request: ClaimRequest) async throws -> ClaimAnswer { earlier(try await base.claim(request)) }
    func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        try await base.claim(batch: requests).map(earlier)
    }
}

/// A fresh lease may be dated a moment before its record (``Lease/claimedAt``, ``Lease/leaseUntil``):
/// no real-clock check may demand the two be equal, or a store that does so (Redis) fails it
/// whenever its claim's round trip crosses a millisecond.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("Conformance of a store that dates fresh leases a moment early")
struct MomentEarlierConformanceTimingTests {
    @Test(arguments: DedupConformance.checks(manualClock: false))
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(RealClockInMemoryHarness(makeBaseStore: { EarlyDatingStore() }))
    }
}
