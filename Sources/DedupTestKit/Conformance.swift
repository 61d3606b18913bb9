import Dedup

/// What the conformance suite needs to know of a store under test.
///
/// Implement it once for your store, then run every check of ``DedupConformance/checks`` against it
/// (one test per check, so a failure names the rule it broke):
///
/// ```swift
/// @Test(arguments: DedupConformance.checks(manualClock: false))
/// func conforms(_ check: ConformanceCheck) async throws {
///     try await check.run(MyStoreHarness())
/// }
/// ```
public protocol ConformanceHarness: Sendable {
    /// A fresh, empty store. Each check calls it once or more; stores from one harness call share
    /// nothing with those of another call.
    func makeStore() async throws -> any DedupStore

    /// Makes a second handle on the same data as `store` (another connection, another open of the
    /// same file), for checks that race two handles. Return `store` itself if the store has no such
    /// notion.
    func makePeer(of store: any DedupStore) async throws -> any DedupStore

    /// The time unit checks build leases and retentions from: a store on a clock the harness moves
    /// by hand can use whole seconds; a store on a real server clock needs a unit short enough to
    /// wait out (about 100 ms) and long enough to be measured reliably.
    var timeUnit: Duration { get }

    /// Moves the clock of every store this harness made forward by `duration` (a manual clock), or
    /// waits that long (a real one).
    func advance(by duration: Duration) async throws

    /// `true` when ``advance(by:)`` moves the store's clock exactly (a ``ManualDedupClock``), so
    /// checks may assert exact times and millisecond boundaries. Default `false`: checks then allow
    /// for the time an operation takes, and the exact-boundary checks refuse to run (see
    /// ``ConformanceCheck/needsManualClock``).
    var hasManualClock: Bool { get }

    /// `true` when the store pages in ``/Dedup/RecordID`` order (UTF-8 bytes of namespace, then key), so
    /// the paging check also asserts the order and full pages. Default `false` (scan order).
    var pagesInRecordIDOrder: Bool { get }

    /// `true` when the store drops expired records by itself (Redis key TTLs), so
    /// ``/Dedup/DedupStore/purgeExpired(limit:)`` may find fewer than expired; the purge check then asserts
    /// bounds instead of exact counts. Default `false`.
    var expiresRecordsAutomatically: Bool { get }
}

extension ConformanceHarness {
    /// By default a harness is on a real clock.
    public var hasManualClock: Bool { false }
    /// By default pages may come in scan order.
    public var pagesInRecordIDOrder: Bool { false }
    /// By default expired records stay until purged.
    public var expiresRecordsAutomatically: Bool { false }
}

/// A failed conformance expectation, naming what was expected and what the store did.
public struct ConformanceFailure: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var description: String
    /// Where the expectation is written.
    public var location: String

    /// Creates a failure.
    public init(_ description: String, file: StaticString = #fileID, line: UInt = #line) {
        self.description = description
        self.location = "\(file):\(line)"
    }
}

/// One rule of the store contract, runnable against any harness.
public struct ConformanceCheck: Sendable, CustomStringConvertible {
    /// The rule, as a sentence: shown as the test's argument.
    public let name: String
    /// `true` for checks of exact millisecond boundaries, which only a harness with
    /// ``ConformanceHarness/hasManualClock`` can run; on any other harness ``run`` throws a
    /// ``ConformanceFailure`` saying so rather than passing without checking anything. Select the
    /// checks a real-clock store can run with ``DedupConformance/checks(manualClock:)``.
    public let needsManualClock: Bool
    /// Runs the check; throws ``ConformanceFailure`` (or the store's error) when the rule is broken.
    ///
    /// On a real clock, a run whose "before the boundary" observation came after the boundary (the
    /// test process was not scheduled in time) is inconclusive and is repeated, up to five runs; a
    /// failure observed in time is reported at once.
    public let run: @Sendable (any ConformanceHarness) async throws -> Void

    /// Creates a check.
    public init(
        _ name: String,
        needsManualClock: Bool = false,
        run: @escaping @Sendable (any ConformanceHarness) async throws -> Void
    ) {
        self.name = name
        self.needsManualClock = needsManualClock
        self.run = { harness in
            if needsManualClock && !harness.hasManualClock {
                throw ConformanceFailure(
                    "“\(name)” needs a harness on a manual clock; run DedupConformance.checks(manualClock: false) on this one"
                )
            }
            // On a real clock an observation due before a boundary can come too late when the test
            // process is starved; such a run proves nothing either way, so it is repeated.
            var hiccups: [String] = []
            for _ in 0..<Self.attemptsOnRealClocks {
                do {
                    try await run(harness)
                    return
                } catch let hiccup as TimingHiccup {
                    hiccups.append(hiccup.failure.description)
                }
            }
            throw ConformanceFailure(
                "“\(name)”: \(hiccups.count) runs each made an observation too late to judge the store (last: \(hiccups.last ?? "")); the test process is too slow for a time unit of \(harness.timeUnit): raise ConformanceHarness.timeUnit"
            )
        }
    }

    /// How many times a check runs on a real clock before a run that came too late every time fails.
    static let attemptsOnRealClocks = 5

    /// The rule's name.
    public var description: String { name }
}
