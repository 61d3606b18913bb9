import Dedup

/// What the conformance suite needs to know of a store under test.
///
/// Implement it once for your store, then run every check of ``DedupConformance/checks`` against it
/// (one test per check, so a failure names the rule it broke).
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

    /// Moves the store's clock forward by `duration` (a manual clock), or waits that long (a real one).
    func advance(by duration: Duration) async throws
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
    /// Runs the check; throws ``ConformanceFailure`` (or the store's error) when the rule is broken.
    public let run: @Sendable (any ConformanceHarness) async throws -> Void

    /// Creates a check.
    public init(_ name: String, run: @escaping @Sendable (any ConformanceHarness) async throws -> Void) {
        self.name = name
        self.run = run
    }

    /// The rule's name.
    public var description: String { name }
}
