import Dedup
import Synchronization

/// Wraps a store and fails or slows chosen operations on demand, counting every call: for testing
/// how a consumer behaves when its store is down, slow, or flaky.
public final class FaultInjectingDedupStore: DedupStore {
    /// The operations faults can be injected into.
    public enum Operation: String, Hashable, Sendable, CaseIterable {
        /// ``/Dedup/DedupStore/claim(_:)`` and ``/Dedup/DedupStore/claim(batch:)``.
        case claim
        /// ``/Dedup/DedupStore/complete(_:)`` and ``/Dedup/DedupStore/complete(batch:)``.
        case complete
        /// ``/Dedup/DedupStore/release(_:)``.
        case release
        /// ``/Dedup/DedupStore/renew(_:for:)`` and ``/Dedup/DedupStore/renew(batch:for:)``.
        case renew
        /// The inspection calls.
        case inspect
    }

    private struct Fault {
        var error: DedupError
        /// How many more calls fail; `nil` for all of them.
        var remaining: Int?
    }

    private struct State {
        var faults: [Operation: Fault] = [:]
        var calls: [Operation: Int] = [:]
        var latencies: [Operation: Duration] = [:]
    }

    /// The store calls go to when they do not fail.
    public let base: any DedupStore
    private let state = Mutex(State())

    /// Wraps `base`.
    public init(_ base: any DedupStore) {
        self.base = base
    }

    /// Makes the next `count` calls of `operation` (all of them when `nil`) throw `error`.
    public func fail(_ operation: Operation, with error: DedupError, times count: Int? = nil) {
        state.withLock { $0.faults[operation] = Fault(error: error, remaining: count) }
    }

    /// Makes every later call of `operations` take `latency` longer (sleeping before it goes to the
    /// base store), as a store behind a slow network would; `nil` removes the delay.
    public func delay(_ operations: Set<Operation> = Set(Operation.allCases), by latency: Duration?) {
        state.withLock { state in
            for operation in operations { state.latencies[operation] = latency }
        }
    }

    /// Lets every call through again, at full speed.
    public func heal() {
        state.withLock { state in
            state.faults.removeAll()
            state.latencies.removeAll()
        }
    }

    /// How many calls of `operation` were made, failed ones included.
    public func calls(_ operation: Operation) -> Int {
        state.withLock { $0.calls[operation, default: 0] }
    }

    private func enter(_ operation: Operation) async throws(DedupError) {
        let (error, latency) = state.withLock { state -> (DedupError?, Duration?) in
            state.calls[operation, default: 0] += 1
            let latency = state.latencies[operation]
            guard var fault = state.faults[operation] else { return (nil, latency) }
            if let remaining = fault.remaining {
                if remaining <= 1 {
                    state.faults[operation] = nil
                } else {
                    fault.remaining = remaining - 1
                    state.faults[operation] = fault
                }
            }
            return (fault.error, latency)
        }
        if let latency { try? await Task.sleep(for: latency) }
        if let error { throw error }
    }

    /// Claims through the base store unless a claim fault is set.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try await enter(.claim)
        return try await base.claim(request)
    }

    /// Claims a batch through the base store unless a claim fault is set.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        try await enter(.claim)
        return try await base.claim(batch: requests)
    }

    /// Completes through the base store unless a complete fault is set.
    public func complete(_ completion: Completion) async throws {
        try await enter(.complete)
        try await base.complete(completion)
    }

    /// Completes a batch through the base store unless a complete fault is set.
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        try await enter(.complete)
        return try await base.complete(batch: completions)
    }

    /// Releases through the base store unless a release fault is set.
    public func release(_ lease: Lease) async throws {
        try await enter(.release)
        try await base.release(lease)
    }

    /// Renews through the base store unless a renew fault is set.
    public func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        try await enter(.renew)
        return try await base.renew(lease, for: duration)
    }

    /// Renews a batch through the base store (one call, as the base makes it) unless a renew fault is set.
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        try await enter(.renew)
        return try await base.renew(batch: leases, for: duration)
    }

    /// Reads a record through the base store unless an inspect fault is set.
    public func record(for id: RecordID) async throws -> DedupRecord? {
        try await enter(.inspect)
        return try await base.record(for: id)
    }

    /// Lists through the base store unless an inspect fault is set.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage
    {
        try await enter(.inspect)
        return try await base.records(matching: filter, after: cursor, limit: limit)
    }

    /// Deletes through the base store unless an inspect fault is set.
    public func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        try await enter(.inspect)
        return try await base.delete(ids, matching: filter)
    }

    /// Purges through the base store unless an inspect fault is set.
    public func purgeExpired(limit: Int) async throws -> Int {
        try await enter(.inspect)
        return try await base.purgeExpired(limit: limit)
    }

    /// Counts through the base store unless an inspect fault is set.
    public func stats() async throws -> DedupStats {
        try await enter(.inspect)
        return try await base.stats()
    }
}
