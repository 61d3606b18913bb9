import Dedup
import Foundation
import Synchronization

// Shared vocabulary of the conformance checks: a store under test with its time unit, and
// expectations that throw a ConformanceFailure naming what was expected and what the store did.

/// The moment a real-clock observation must come before, on two clocks: the test's monotonic
/// clock, and the wall clock that stores date records by (which can be stepped while the test
/// waits). Past either one, a store's "too late" answer is right by its own clock.
struct ConformanceDeadline {
    /// The deadline on the test's monotonic clock.
    let monotonic: ContinuousClock.Instant
    /// The same deadline on the wall clock.
    let wall: Date

    /// Whether either clock has reached the deadline.
    var hasPassed: Bool { ContinuousClock.now >= monotonic || Date() >= wall }
}

/// One store under test, with the leases and retentions the checks build from the harness's unit.
struct ConformanceEnvironment: Sendable {
    let harness: any ConformanceHarness
    let store: any DedupStore
    let unit: Duration
    let manualClock: Bool

    /// The namespace checks use unless they test namespaces.
    static let namespace = "conformance"

    init(_ harness: any ConformanceHarness) async throws {
        self.init(harness, store: try await harness.makeStore())
    }

    /// The same checks on another store of the harness (or a peer handle).
    init(_ harness: any ConformanceHarness, store: any DedupStore) {
        self.harness = harness
        self.store = store
        self.unit = harness.timeUnit
        self.manualClock = harness.hasManualClock
    }

    /// The default lease: three units, so "one unit before" and "one unit after" its end both exist.
    var lease: Duration { unit * 3 }
    /// The default retention: a hundred units, so no record expires by accident while a check runs
    /// on a slow machine; checks of expiry give their own, short retentions.
    var retention: Duration { unit * 100 }
    /// A lease no check outlives, for checks that must not see takeovers while they run.
    var longLease: Duration { unit * 600 }

    func units(_ count: Int) -> Duration { unit * count }

    func advance(units count: Int) async throws {
        try await harness.advance(by: unit * count)
    }

    func advance(by duration: Duration) async throws {
        try await harness.advance(by: duration)
    }

    func id(_ key: String, in namespace: String = ConformanceEnvironment.namespace) throws -> RecordID {
        try RecordID(namespace: namespace, key: key)
    }

    func request(
        _ id: RecordID,
        token: String = Lease.makeOwnerToken(),
        lease: Duration? = nil,
        retention: Duration? = nil,
        fingerprint: String? = nil,
        label: String = ClaimRequest.defaultOwnerLabel,
        brokerTime: Date? = nil
    ) -> ClaimRequest {
        ClaimRequest(
            id: id,
            ownerToken: token,
            lease: lease ?? self.lease,
            retention: retention ?? self.retention,
            fingerprint: fingerprint,
            ownerLabel: label,
            brokerTime: brokerTime
        )
    }

    func claim(
        _ id: RecordID,
        token: String = Lease.makeOwnerToken(),
        lease: Duration? = nil,
        retention: Duration? = nil,
        fingerprint: String? = nil,
        label: String = ClaimRequest.defaultOwnerLabel,
        brokerTime: Date? = nil
    ) async throws -> ClaimAnswer {
        try await store.claim(
            request(
                id,
                token: token,
                lease: lease,
                retention: retention,
                fingerprint: fingerprint,
                label: label,
                brokerTime: brokerTime
            )
        )
    }

    /// Claims and expects a fresh acquisition or a takeover, as `takeover` says, by a lease carrying
    /// the request's owner token and label.
    func acquire(
        _ id: RecordID,
        token: String = Lease.makeOwnerToken(),
        lease: Duration? = nil,
        retention: Duration? = nil,
        fingerprint: String? = nil,
        label: String = ClaimRequest.defaultOwnerLabel,
        brokerTime: Date? = nil,
        takeover: Bool = false,
        _ what: String = "claim",
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> Lease {
        let answer = try await claim(
            id,
            token: token,
            lease: lease,
            retention: retention,
            fingerprint: fingerprint,
            label: label,
            brokerTime: brokerTime
        )
        let acquired = try expectAcquired(answer, "\(what) of \(id)", file: file, line: line)
        try expect(
            acquired.isTakeover == takeover,
            "\(what) of \(id): expected isTakeover \(takeover), got \(describe(answer))",
            file: file,
            line: line
        )
        try expect(
            acquired.ownerToken == token,
            "\(what) of \(id): the lease must carry the request's owner token",
            file: file,
            line: line
        )
        try expect(
            acquired.ownerLabel.map { $0.utf8.elementsEqual(label.utf8) } == true,
            "\(what) of \(id): the lease must carry the request's owner label \(label.debugDescription), not \(acquired.ownerLabel.debugDescription)",
            file: file,
            line: line
        )
        return acquired
    }

    /// Claims and completes a key, returning the completed lease.
    @discardableResult
    func acquireAndComplete(
        _ id: RecordID,
        token: String = Lease.makeOwnerToken(),
        lease: Duration? = nil,
        retention: Duration? = nil,
        fingerprint: String? = nil,
        result: Data? = nil,
        brokerTime: Date? = nil,
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> Lease {
        let acquired = try await acquire(
            id,
            token: token,
            lease: lease,
            fingerprint: fingerprint,
            brokerTime: brokerTime,
            file: file,
            line: line
        )
        try await store.complete(Completion(lease: acquired, retention: retention ?? self.retention, result: result))
        return acquired
    }

    /// The live record of `id`, which must exist.
    func existingRecord(
        _ id: RecordID,
        _ what: String = "record(for:)",
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> DedupRecord {
        guard let record = try await store.record(for: id) else {
            throw ConformanceFailure("\(what): expected a record for \(id), found none", file: file, line: line)
        }
        return record
    }

    /// Expects `later - earlier` to be `duration`: exactly on a manual clock, at least on a real one
    /// (where operations take time).
    func expectElapsed(
        from earlier: Date,
        to later: Date,
        _ duration: Duration,
        _ what: String,
        file: StaticString = #fileID,
        line: UInt = #line
    ) throws {
        let elapsed = later.millisecondsSince1970 - earlier.millisecondsSince1970
        let expected = duration.wholeMilliseconds
        if manualClock {
            try expect(
                elapsed == expected,
                "\(what): expected \(expected) ms, got \(elapsed) ms",
                file: file,
                line: line
            )
        } else {
            try expect(
                elapsed >= expected,
                "\(what): expected at least \(expected) ms, got \(elapsed) ms",
                file: file,
                line: line
            )
        }
    }

    /// Expects a lease's end to be its record's: exactly on a manual clock; on a real clock the
    /// lease may end earlier by less than one unit, never later (a store may hand out the time it
    /// sent the claim, plus the lease, rather than read the record's own time back).
    func expectLeaseEnd(
        _ lease: Lease,
        matches record: DedupRecord,
        _ what: String,
        file: StaticString = #fileID,
        line: UInt = #line
    ) throws {
        let recorded = try unwrap(record.leaseUntil, "\(what): no leaseUntil on the record", file: file, line: line)
        try expectSameOrMomentEarlier(lease.leaseUntil, than: recorded, what, file: file, line: line)
    }

    /// Expects a time a store reported from its side of a claim (a lease's end, its first claim) to
    /// be the record's own: exactly on a manual clock; on a real clock earlier by less than one
    /// unit, never later.
    func expectSameOrMomentEarlier(
        _ reported: Date,
        than recorded: Date,
        _ what: String,
        file: StaticString = #fileID,
        line: UInt = #line
    ) throws {
        let early = recorded.millisecondsSince1970 - reported.millisecondsSince1970
        if manualClock {
            try expect(
                early == 0,
                "\(what): \(reported.millisecondsSince1970) reported, \(recorded.millisecondsSince1970) recorded",
                file: file,
                line: line
            )
        } else {
            try expect(
                early >= 0 && early < unit.wholeMilliseconds,
                "\(what): reported \(early) ms before the record's time (allowed: 0 to less than one unit)",
                file: file,
                line: line
            )
        }
    }

    /// When an observation "before a boundary `duration` from now" must have been made. Take it
    /// just before the operation the boundary counts from.
    func deadline(in duration: Duration) -> ConformanceDeadline {
        // A millisecond early: stores date records from "now" truncated to whole milliseconds, so a
        // boundary can fall up to a millisecond before `duration` has passed.
        let early = max(.zero, duration - .milliseconds(1))
        let (seconds, attoseconds) = early.components
        return ConformanceDeadline(
            monotonic: .now + early,
            wall: Date() + Double(seconds) + Double(attoseconds) / 1e18
        )
    }

    /// Runs an observation that is only right if it happens before `deadline` (a claim that must
    /// still find the lease live, say). On a real clock, a failure after the deadline proves nothing
    /// about the store (the test process was not scheduled in time), so the check is run again
    /// rather than failed; a failure before the deadline is the store's.
    func beforeDeadline<Value>(
        _ deadline: ConformanceDeadline,
        _ body: () async throws -> Value
    ) async throws -> Value {
        do {
            return try await body()
        } catch let failure as ConformanceFailure where !manualClock && deadline.hasPassed {
            throw TimingHiccup(failure: failure)
        }
    }

    /// Every record `filter` lists, following cursors to the end, checking each page's size and
    /// that no record comes twice.
    func listAll(
        _ filter: RecordFilter = RecordFilter(),
        limit: Int = 100,
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> [DedupRecord] {
        var all: [DedupRecord] = []
        var seen = Set<IdentityBytes>()
        var cursor: PageCursor?
        for _ in 0..<10_000 {
            let page = try await store.records(matching: filter, after: cursor, limit: limit)
            try expect(
                page.records.count <= limit,
                "a page of limit \(limit) held \(page.records.count) records",
                file: file,
                line: line
            )
            for record in page.records {
                try expect(
                    seen.insert(IdentityBytes(record.id)).inserted,
                    "paging listed \(record.id) twice",
                    file: file,
                    line: line
                )
                try expect(
                    filter.matches(record),
                    "listing with \(filter) returned \(record.id), which does not match",
                    file: file,
                    line: line
                )
            }
            all += page.records
            guard let next = page.next else { return all }
            cursor = next
        }
        throw ConformanceFailure("paging did not end after 10,000 pages", file: file, line: line)
    }

    /// The identities `filter` lists, as byte strings for exact comparison.
    func listedIdentities(
        _ filter: RecordFilter,
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> Set<IdentityBytes> {
        Set(try await listAll(filter, file: file, line: line).map { IdentityBytes($0.id) })
    }
}

/// An observation that came too late to judge the store: the check is run again.
struct TimingHiccup: Error {
    let failure: ConformanceFailure
}

/// An identity compared by UTF-8 bytes, as stores compare it (`RecordID`'s `==` is `String`'s, which
/// treats canonically equivalent strings as equal).
struct IdentityBytes: Hashable, Sendable, CustomStringConvertible {
    let namespace: [UInt8]
    let key: [UInt8]

    init(_ id: RecordID) {
        namespace = Array(id.namespace.utf8)
        key = Array(id.key.utf8)
    }

    var description: String {
        "\(String(decoding: namespace, as: UTF8.self).debugDescription)/\(String(decoding: key, as: UTF8.self).debugDescription)"
    }
}

func expect(
    _ condition: Bool,
    _ message: @autoclosure () -> String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws {
    if !condition { throw ConformanceFailure(message(), file: file, line: line) }
}

func expectEqual<Value: Equatable>(
    _ actual: Value,
    _ expected: Value,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws {
    if actual != expected {
        throw ConformanceFailure("\(what): expected \(expected), got \(actual)", file: file, line: line)
    }
}

func expectSameBytes(
    _ actual: RecordID,
    _ expected: RecordID,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws {
    try expect(
        IdentityBytes(actual) == IdentityBytes(expected),
        "\(what): expected identity \(expected), got \(actual)",
        file: file,
        line: line
    )
}

func expectAcquired(
    _ answer: ClaimAnswer,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws -> Lease {
    guard case .acquired(let lease) = answer else {
        throw ConformanceFailure("\(what): expected acquired, got \(describe(answer))", file: file, line: line)
    }
    return lease
}

func expectDuplicate(
    _ answer: ClaimAnswer,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws -> DedupRecord {
    guard case .duplicate(let record) = answer else {
        throw ConformanceFailure("\(what): expected duplicate, got \(describe(answer))", file: file, line: line)
    }
    return record
}

func expectInFlight(
    _ answer: ClaimAnswer,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws -> DedupRecord {
    guard case .inFlight(let record) = answer else {
        throw ConformanceFailure("\(what): expected inFlight, got \(describe(answer))", file: file, line: line)
    }
    return record
}

func expectMismatch(
    _ answer: ClaimAnswer,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws -> DedupRecord {
    guard case .payloadMismatch(let record) = answer else {
        throw ConformanceFailure("\(what): expected payloadMismatch, got \(describe(answer))", file: file, line: line)
    }
    return record
}

/// Runs `body` and expects it to throw `DedupError` with code `leaseLost`.
func expectLeaseLost(
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line,
    _ body: () async throws -> Void
) async throws {
    try await expectError(.leaseLost, what, file: file, line: line, body)
}

/// Runs `body` and expects it to throw `DedupError` with `code`.
func expectError(
    _ code: DedupError.Code,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line,
    _ body: () async throws -> Void
) async throws {
    do {
        try await body()
    } catch let error as DedupError where error.code == code {
        return
    } catch {
        throw ConformanceFailure("\(what): expected DedupError(.\(code)), got \(error)", file: file, line: line)
    }
    throw ConformanceFailure("\(what): expected DedupError(.\(code)), but it succeeded", file: file, line: line)
}

/// A claim answer without its times, for comparing answers of stores whose clocks differ.
func describe(_ answer: ClaimAnswer) -> String {
    switch answer {
    case .acquired(let lease):
        return
            "acquired(\(lease.id), owner \(lease.ownerToken), fencing \(lease.fencingToken), attempt \(lease.attempt)\(lease.isTakeover ? ", takeover" : ""))"
    case .duplicate(let record):
        return "duplicate(\(describe(record)))"
    case .inFlight(let record):
        return "inFlight(\(describe(record)))"
    case .payloadMismatch(let record):
        return "payloadMismatch(\(describe(record)))"
    }
}

/// A record without its times.
func describe(_ record: DedupRecord) -> String {
    var parts = [
        "\(record.id)", record.state.rawValue, "owner \(record.ownerToken ?? "none")",
        "label \(record.ownerLabel?.debugDescription ?? "none")",
        "fencing \(record.fencingToken)", "attempt \(record.attempt)",
    ]
    if let fingerprint = record.fingerprint { parts.append("fingerprint \(fingerprint.debugDescription)") }
    if let result = record.result { parts.append("result \(result.count) bytes") }
    return parts.joined(separator: ", ")
}

/// Deterministic bytes for result round trips.
func patternBytes(count: Int, seed: UInt64) -> Data {
    var state = seed
    var bytes = [UInt8]()
    bytes.reserveCapacity(count)
    while bytes.count < count {
        state = state &+ 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        mixed ^= mixed >> 31
        withUnsafeBytes(of: mixed) { bytes.append(contentsOf: $0.prefix(count - bytes.count)) }
    }
    return Data(bytes)
}

func unwrap<Value>(_ value: Value?, _ what: String, file: StaticString = #fileID, line: UInt = #line) throws -> Value {
    guard let value else { throw ConformanceFailure("\(what): expected a value, found nil", file: file, line: line) }
    return value
}

/// Holds tasks until `count` of them arrive, so racing tasks start their races together instead of
/// the first one finishing before the last one starts.
final class StartingLine: Sendable {
    private let state: Mutex<(waiting: Int, continuations: [CheckedContinuation<Void, Never>])>

    init(tasks count: Int) {
        state = Mutex((count, []))
    }

    func arriveAndWait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let released = state.withLock { state -> [CheckedContinuation<Void, Never>]? in
                state.waiting -= 1
                state.continuations.append(continuation)
                guard state.waiting <= 0 else { return nil }
                defer { state.continuations = [] }
                return state.continuations
            }
            for waiter in released ?? [] { waiter.resume() }
        }
    }
}
