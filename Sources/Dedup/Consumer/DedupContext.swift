import Synchronization

/// What a handler knows about the claim it runs under.
///
/// Pass ``fencingToken`` to downstream systems that can refuse writes from an older holder: it is
/// the only protection that still holds when a handler outlives its lease.
public struct DedupContext: Sendable {
    /// The record being processed; `nil` when the handler runs without dedup.
    public var id: RecordID? { lease?.id }
    /// The lease the handler runs under; `nil` when it runs without dedup.
    public let lease: Lease?
    /// Strictly increasing per key across acquisitions (0 without dedup).
    public var fencingToken: Int64 { lease?.fencingToken ?? 0 }
    /// 1 for the first acquisition of the key, more after takeovers (0 without dedup).
    public var attempt: Int { lease?.attempt ?? 0 }
    /// `true` when this run took over an expired lease: a previous run may have done part of the work.
    public var isTakeover: Bool { lease?.isTakeover ?? false }

    let watch: LeaseWatch?

    /// A context for a handler that runs under `lease` with no renewal: for stores that run the
    /// handler inside their own transaction, where no other consumer can take the key over.
    public init(lease: Lease) {
        self.init(lease: lease, watch: nil)
    }

    init(lease: Lease?, watch: LeaseWatch?) {
        self.lease = lease
        self.watch = watch
    }

    /// `true` once renewal was refused (another consumer took the key over) or the lease's end
    /// passed on this process's monotonic clock before a renewal was confirmed. The handler's
    /// result will not be recorded.
    ///
    /// It compares the clock with the lease's local deadline at each read, so it turns the moment
    /// the lease may have passed in the store, however slow the store's renewals are, and stays
    /// `true` from then on.
    public var isLeaseLost: Bool { watch?.isLost ?? false }

    /// Throws ``DedupError/Code/leaseLost`` once the lease is lost (see ``isLeaseLost``): call it
    /// between steps of a long handler so it stops instead of racing the consumer that took over.
    /// When the lease was lost because its renewals failed, the error's
    /// ``DedupError/underlyingError`` is the store's error for the latest of them.
    public func checkLease() throws(DedupError) {
        if isLeaseLost, let id {
            throw DedupError(
                .leaseLost,
                "the lease on \(id) was lost while the handler ran",
                underlyingError: watch?.renewalFailure
            )
        }
    }

    /// Runs `operation` in a child task that is cancelled the moment the lease is lost, for the slow
    /// part of a handler that reacts to cancellation (network calls, `Task.sleep`).
    ///
    /// The handler itself runs in the caller's task, which the consumer cannot cancel without
    /// cancelling the caller; this scope costs a child task (tens of microseconds), so use it where
    /// the work is long, not around every handler.
    ///
    /// - Throws: ``DedupError/Code/leaseLost`` when the lease was lost (the operation was cancelled;
    ///   its ``DedupError/underlyingError`` as for ``checkLease()``), or the operation's own error.
    public func cancellingOnLeaseLoss<Value: Sendable>(
        _ operation: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        guard let watch else { return try await operation() }
        try checkLease()
        let id = self.id
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                await watch.waitUntilLost()
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let value = next { return value }
                if watch.isLost { break }
            }
            throw DedupError(
                .leaseLost,
                "the lease on \(id.map { "\($0)" } ?? "the record") was lost; the operation was cancelled",
                underlyingError: watch.renewalFailure
            )
        }
    }
}
