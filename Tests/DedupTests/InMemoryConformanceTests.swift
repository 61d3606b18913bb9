import Dedup
import DedupTestKit
import Testing

/// The in-memory store on a manual clock: every store's checks run here first, exactly.
struct InMemoryHarness: ConformanceHarness {
    /// One clock for every store this harness makes, so `advance` moves them all.
    let clock = ManualDedupClock()
    /// The store under test, made of an in-memory store: that store itself, or one wrapping it.
    var wrap: @Sendable (InMemoryDedupStore<ManualDedupClock>) -> any DedupStore = { $0 }

    func makeStore() async throws -> any DedupStore { wrap(InMemoryDedupStore(clock: clock)) }
    func makePeer(of store: any DedupStore) async throws -> any DedupStore { store }
    var timeUnit: Duration { .seconds(1) }
    func advance(by duration: Duration) async throws { clock.advance(by: duration) }
    var hasManualClock: Bool { true }
    var pagesInRecordIDOrder: Bool { true }
}

@Suite("InMemoryDedupStore conformance")
struct InMemoryConformanceTests {
    @Test(arguments: DedupConformance.checks)
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(InMemoryHarness())
    }

    @Test("an exact-boundary check refuses a real-clock harness instead of passing vacuously")
    func exactChecksNeedAManualClock() async throws {
        let exact = DedupConformance.checks.filter(\.needsManualClock)
        #expect(!exact.isEmpty)
        #expect(DedupConformance.checks(manualClock: false).count == DedupConformance.checks.count - exact.count)
        await #expect(throws: ConformanceFailure.self) { try await exact[0].run(RealClockInMemoryHarness()) }
    }
}

/// The in-memory store on the real clock, as a store on a server clock (Redis) runs the suite: proves
/// the checks themselves hold up when time passes by waiting rather than by hand.
struct RealClockInMemoryHarness: ConformanceHarness {
    /// The store under test: the in-memory store, or one wrapping it.
    var makeBaseStore: @Sendable () -> any DedupStore = { InMemoryDedupStore() }
    func makeStore() async throws -> any DedupStore { makeBaseStore() }
    func makePeer(of store: any DedupStore) async throws -> any DedupStore { store }
    var timeUnit: Duration { .milliseconds(400) }
    func advance(by duration: Duration) async throws { try await Task.sleep(for: duration) }
    var pagesInRecordIDOrder: Bool { true }
}

/// The in-memory store's conformance on the system clock, as the real stores run it.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("InMemoryDedupStore conformance on the real clock")
struct InMemoryRealClockConformanceTimingTests {
    @Test(arguments: DedupConformance.checks(manualClock: false))
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(RealClockInMemoryHarness())
    }
}
