import Synchronization

/// What a handler knows about the claim it runs under.
///
/// Pass ``fencingToken`` to downstream systems that can refuse writes from an older holder: it is
/// the only protection that still holds when a handler outlives its lease.
public struct DedupContext: Sendable {
    /// The record being processed; `nil` when the handler runs without dedup.
    public let id: RecordID?
    /// The lease the handler runs under; `nil` when it runs without dedup.
    public let lease: Lease?
    /// Strictly increasing per key across acquisitions (0 without dedup).
    public var fencingToken: Int64 { lease?.fencingToken ?? 0 }
    /// 1 for the first acquisition of the key, more after takeovers (0 without dedup).
    public var attempt: Int { lease?.attempt ?? 0 }
    /// `true` when this run took over an expired lease: a previous run may have done part of the work.
    public var isTakeover: Bool { lease?.isTakeover ?? false }

    let watch: LeaseWatch?

    init(lease: Lease?, watch: LeaseWatch?) {
        self.id = lease?.id
        self.lease = lease
        self.watch = watch
    }

    /// `true` once renewal was refused (another consumer took the key over) or could not be
    /// confirmed before the lease ended. The handler's result will not be recorded.
    public var isLeaseLost: Bool { watch?.isLost ?? false }

    /// Throws ``DedupError/Code/leaseLost`` once the lease is lost: call it between steps of a long
    /// handler so it stops instead of racing the consumer that took over.
    public func checkLease() throws(DedupError) {
        if isLeaseLost, let id {
            throw DedupError(.leaseLost, "the lease on \(id) was lost while the handler ran")
        }
    }
}

/// Shared between a running handler and the lease keeper: the current lease and whether it is lost.
final class LeaseWatch: Sendable {
    struct State {
        var lease: Lease
        /// When the lease ends by this process's monotonic clock, counted from before the claim was
        /// sent, so it never ends later here than in the store.
        var localDeadline: ContinuousClock.Instant
        var nextRenewal: ContinuousClock.Instant
    }

    let state: Mutex<State>
    private let lost = Atomic<Bool>(false)

    init(lease: Lease, claimStarted: ContinuousClock.Instant, leaseDuration: Duration, renewalInterval: Duration) {
        state = Mutex(
            State(
                lease: lease,
                localDeadline: claimStarted + leaseDuration,
                nextRenewal: claimStarted + renewalInterval
            )
        )
    }

    var isLost: Bool { lost.load(ordering: .acquiring) }
    func markLost() { lost.store(true, ordering: .releasing) }
    var currentLease: Lease { state.withLock { $0.lease } }
}
