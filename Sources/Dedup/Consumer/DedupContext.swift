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

    /// Runs `operation` in a child task that is cancelled the moment the lease is lost, for the slow
    /// part of a handler that reacts to cancellation (network calls, `Task.sleep`).
    ///
    /// The handler itself runs in the caller's task, which the consumer cannot cancel without
    /// cancelling the caller; this scope costs a child task (tens of microseconds), so use it where
    /// the work is long, not around every handler.
    ///
    /// - Throws: ``DedupError/Code/leaseLost`` when the lease was lost (the operation was cancelled),
    ///   or the operation's own error.
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
            throw DedupError(.leaseLost, "the lease on \(id.map { "\($0)" } ?? "the record") was lost; the operation was cancelled")
        }
    }
}

/// Shared between a running handler and the lease keeper: the current lease and whether it is lost.
final class LeaseWatch: Sendable {
    struct State {
        var lease: Lease
        /// When the lease ends by this process's monotonic clock, counted from before the claim was
        /// sent, so it never ends later here than in the store.
        var localDeadline: MonotonicInstant
        var nextRenewal: MonotonicInstant
    }

    let state: Mutex<State>
    private let lost = Atomic<Bool>(false)
    private let retired = Atomic<Bool>(false)
    /// Tasks waiting in ``waitUntilLost()``, by a number so a cancelled waiter can leave.
    private let waiters = Mutex<(next: Int, continuations: [Int: CheckedContinuation<Void, Never>])>((0, [:]))

    /// A watch from the claim's start: `leaseNanoseconds` and `renewalNanoseconds` are the lease and
    /// the renewal interval, converted once by the keeper.
    init(lease: Lease, claimStarted: MonotonicInstant, leaseNanoseconds: Int64, renewalNanoseconds: Int64) {
        state = Mutex(
            State(
                lease: lease,
                localDeadline: claimStarted.advanced(byNanoseconds: leaseNanoseconds),
                nextRenewal: claimStarted.advanced(byNanoseconds: renewalNanoseconds)
            )
        )
    }

    var isLost: Bool { lost.load(ordering: .acquiring) }

    /// `true` once the lease needs no more renewals (its handler failed and it was released, while
    /// the rest of its batch still runs).
    var isRetired: Bool { retired.load(ordering: .acquiring) }

    /// Stops the keeper renewing this lease; its batch registration may stay a while longer.
    func retire() {
        retired.store(true, ordering: .releasing)
    }

    func markLost() {
        lost.store(true, ordering: .releasing)
        let continuations = waiters.withLock { waiters in
            defer { waiters.continuations = [:] }
            return Array(waiters.continuations.values)
        }
        for continuation in continuations { continuation.resume() }
    }

    /// Returns once the lease is lost, or when the waiting task is cancelled.
    func waitUntilLost() async {
        let number = waiters.withLock { waiters in
            waiters.next += 1
            return waiters.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = waiters.withLock { waiters -> Bool in
                    if isLost || Task.isCancelled { return true }
                    waiters.continuations[number] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = waiters.withLock { $0.continuations.removeValue(forKey: number) }
            continuation?.resume()
        }
    }
    var currentLease: Lease { state.withLock { $0.lease } }
    var localDeadline: MonotonicInstant { state.withLock { $0.localDeadline } }
}
