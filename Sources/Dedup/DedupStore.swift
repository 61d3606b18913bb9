import Foundation

/// A shared store of dedup records: the one thing a backend implements.
///
/// A store must implement the single-key calls (``claim(_:)``, ``complete(_:)``, ``release(_:)``,
/// ``renew(_:for:)``) and the inspection calls; the batch calls (``claim(batch:)``,
/// ``complete(batch:)``, ``renew(batch:for:)``) have default implementations on top of the single
/// ones, which a store replaces to do a batch in one round trip or transaction.
///
/// Every method throws ``DedupError``. The rules every store keeps, checked by the conformance suite
/// in `DedupTestKit` (in full: the store contract, see the Dedup documentation's “The store contract”
/// article):
/// 1. A claim is one atomic store operation; never check-then-set across round trips.
/// 2. Complete, release and renew succeed only while the caller's token is the record's current
///    owner token; otherwise they throw ``DedupError/Code/leaseLost`` and change nothing. A lease
///    that has passed but was not taken over is still current.
/// 3. One clock per store (the Redis server's, the SQLite host's).
/// 4. A batch gives exactly the answers that one-by-one calls in order would give.
/// 5. A completed record is kept until its retention passes.
public protocol DedupStore: Sendable {
    /// Claims a key: acquires it (new, or taking over a passed lease, or after retention passed), or
    /// reports it completed, in flight, or fingerprint-mismatched.
    func claim(_ request: ClaimRequest) async throws -> ClaimAnswer

    /// Claims many keys in one round trip or transaction; answers are in request order and equal to
    /// claiming the keys one by one in order (the same key twice: the second is in flight).
    ///
    /// The default implementation claims the keys one by one, in order, with ``claim(_:)``; when a
    /// claim throws, it releases the keys it acquired before it (best effort) and throws that error.
    /// A store implements it itself to claim the batch in one round trip or transaction.
    func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer]

    /// Marks the lease's record completed, keeping `result` until the retention passes.
    ///
    /// - Throws: ``DedupError/Code/leaseLost`` when the lease is not current.
    func complete(_ completion: Completion) async throws

    /// Completes many leases in one round trip or transaction; answers are in order, each
    /// ``CompletionAnswer/leaseLost`` where ``complete(_:)`` would throw
    /// ``DedupError/Code/leaseLost``.
    ///
    /// The default implementation completes the leases one by one, in order, with
    /// ``complete(_:)``. When one throws another error, that error is thrown: the completions before
    /// it stay written and those after it are not tried, as when calling ``complete(_:)`` in a loop
    /// (a consumer retrying the batch finds the written ones completed under its leases). A store
    /// implements it itself to complete the batch in one round trip or transaction.
    func complete(batch completions: [Completion]) async throws -> [CompletionAnswer]

    /// Deletes the lease's in-flight record so a redelivery can run the handler again.
    ///
    /// - Throws: ``DedupError/Code/leaseLost`` when the lease is not current.
    func release(_ lease: Lease) async throws

    /// Extends the lease to `duration` from now (store clock) and returns the extended lease.
    ///
    /// - Throws: ``DedupError/Code/leaseLost`` when the lease is not current.
    func renew(_ lease: Lease, for duration: Duration) async throws -> Lease

    /// Extends many leases to `duration` from now in one round trip or transaction, as a consumer's
    /// lease keeper does for all its running handlers each round; answers are in order, each equal
    /// to what ``renew(_:for:)`` would do for that lease.
    ///
    /// The default implementation renews the leases concurrently, one ``renew(_:for:)`` each, so a
    /// store that implements only the single call still never makes one renewal wait for another.
    ///
    /// - Throws: a store error when the store could not be asked; the leases that were renewed
    ///   before it stay renewed (renewing again is harmless).
    func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer]

    // MARK: Inspection, for operators and `dedup-inspect`

    /// The record of one identity, or `nil` when there is none (expired records count as none).
    func record(for id: RecordID) async throws -> DedupRecord?

    /// A page of records matching `filter`, in ``RecordID`` order where the store can (SQLite) or
    /// in scan order (Redis), continuing after `cursor`.
    func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage

    /// Deletes those of `ids` whose records still match `filter` (checked atomically per record);
    /// returns how many were deleted.
    func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int

    /// Deletes expired records (completed past retention, abandoned claims past their expiry), at
    /// most `limit`; returns how many. Call again while it returns `limit`.
    func purgeExpired(limit: Int) async throws -> Int

    /// Counts by namespace and state, with the oldest and newest record times and broker times.
    func stats() async throws -> DedupStats
}

extension DedupStore {
    /// Claims the keys one by one, in order, with ``claim(_:)``; when a claim throws, releases the
    /// keys acquired before it (best effort: an unreleased one is taken over once its lease passes)
    /// and throws that error.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        var answers: [ClaimAnswer] = []
        answers.reserveCapacity(requests.count)
        for request in requests {
            do {
                answers.append(try await claim(request))
            } catch {
                for case .acquired(let lease) in answers { try? await release(lease) }
                throw error
            }
        }
        return answers
    }

    /// Completes the leases one by one, in order, with ``complete(_:)``: a
    /// ``DedupError/Code/leaseLost`` is that lease's answer, any other error is thrown (the
    /// completions before it stay written).
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        var answers: [CompletionAnswer] = []
        answers.reserveCapacity(completions.count)
        for completion in completions {
            do {
                try await complete(completion)
                answers.append(.completed)
            } catch let error as DedupError where error.code == .leaseLost {
                answers.append(.leaseLost)
            }
        }
        return answers
    }

    /// Renews the leases concurrently, one ``renew(_:for:)`` each.
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        try await withThrowingTaskGroup(of: (Int, RenewalAnswer).self) { group in
            for (index, lease) in leases.enumerated() {
                group.addTask {
                    do {
                        return (index, .renewed(try await renew(lease, for: duration)))
                    } catch let error as DedupError where error.code == .leaseLost {
                        return (index, .leaseLost)
                    }
                }
            }
            var answers = [RenewalAnswer](repeating: .leaseLost, count: leases.count)
            for try await (index, answer) in group { answers[index] = answer }
            return answers
        }
    }

    /// Deletes one record, whatever its state; `true` when there was one.
    public func forget(_ id: RecordID) async throws -> Bool {
        try await delete([id], matching: RecordFilter()) == 1
    }
}

/// Which records an inspection call is about. Every field left `nil` matches everything.
public struct RecordFilter: Hashable, Sendable {
    /// Only this namespace.
    public var namespace: String?
    /// Only this state.
    public var state: RecordState?
    /// Only records whose ``DedupRecord/selectionTime`` (broker time where the record carries one,
    /// else its ``DedupRecord/recordTime``) is at or after this.
    public var from: Date?
    /// Only records whose ``DedupRecord/selectionTime`` is before this.
    public var until: Date?
    /// Only keys starting with this (UTF-8 byte prefix).
    public var keyPrefix: String?

    /// Creates a filter.
    public init(
        namespace: String? = nil,
        state: RecordState? = nil,
        from: Date? = nil,
        until: Date? = nil,
        keyPrefix: String? = nil
    ) {
        self.namespace = namespace
        self.state = state
        self.from = from
        self.until = until
        self.keyPrefix = keyPrefix
    }

    /// Whether a record matches; stores that cannot filter natively use this.
    public func matches(_ record: DedupRecord) -> Bool {
        if let namespace, record.id.namespace != namespace { return false }
        if let state, record.state != state { return false }
        let time = record.selectionTime
        if let from, time < from { return false }
        if let until, time >= until { return false }
        if let keyPrefix, !record.id.key.utf8.starts(with: keyPrefix.utf8) { return false }
        return true
    }
}

/// Where a page of records ended; opaque to callers, meaningful to the store that made it.
public struct PageCursor: Hashable, Sendable, Codable {
    /// The store's own encoding of the position.
    public var token: String

    /// Wraps a store's position.
    public init(token: String) { self.token = token }
}

/// A page of records and where the next one starts.
public struct RecordPage: Sendable {
    /// The records of this page (at most the limit asked for; a scan-ordered store may return fewer
    /// even when more follow).
    public var records: [DedupRecord]
    /// Where to continue; `nil` when there is nothing more.
    public var next: PageCursor?

    /// Creates a page.
    public init(records: [DedupRecord], next: PageCursor?) {
        self.records = records
        self.next = next
    }
}

/// What a store holds, by namespace.
public struct DedupStats: Hashable, Sendable {
    /// One namespace's counts.
    public struct NamespaceStats: Hashable, Sendable {
        /// The namespace.
        public var namespace: String
        /// Records in flight (including those whose lease has passed).
        public var inFlight: Int
        /// In-flight records whose lease has passed: abandoned claims awaiting takeover.
        public var expiredLeases: Int
        /// Completed records.
        public var completed: Int
        /// The oldest record time: how far back dedup covers.
        public var oldest: Date?
        /// The newest record time.
        public var newest: Date?
        /// The oldest ``DedupRecord/brokerTime`` among the records that carry one; `nil` when none does.
        public var oldestBrokerTime: Date?
        /// The newest ``DedupRecord/brokerTime`` among the records that carry one.
        public var newestBrokerTime: Date?

        /// Creates a namespace's counts.
        public init(
            namespace: String,
            inFlight: Int,
            expiredLeases: Int,
            completed: Int,
            oldest: Date?,
            newest: Date?,
            oldestBrokerTime: Date? = nil,
            newestBrokerTime: Date? = nil
        ) {
            self.namespace = namespace
            self.inFlight = inFlight
            self.expiredLeases = expiredLeases
            self.completed = completed
            self.oldest = oldest
            self.newest = newest
            self.oldestBrokerTime = oldestBrokerTime
            self.newestBrokerTime = newestBrokerTime
        }

        /// Widens ``oldestBrokerTime`` … ``newestBrokerTime`` to take in `brokerTime`, if any.
        public mutating func include(brokerTime: Date?) {
            guard let brokerTime else { return }
            oldestBrokerTime = min(oldestBrokerTime ?? brokerTime, brokerTime)
            newestBrokerTime = max(newestBrokerTime ?? brokerTime, brokerTime)
        }
    }

    /// Per namespace, sorted by namespace.
    public var namespaces: [NamespaceStats]

    /// Creates stats.
    public init(namespaces: [NamespaceStats]) {
        self.namespaces = namespaces
    }

    /// All records.
    public var total: Int { namespaces.reduce(0) { $0 + $1.inFlight + $1.completed } }
}
