import Synchronization

/// Shared between a running handler and the lease keeper: the current lease, its local deadline,
/// and whether it is lost.
///
/// A lease is lost when the store refused its renewal, or when its local deadline passed before a
/// renewal was confirmed. The deadline is read from the monotonic clock at every ``isLost``, so a
/// handler learns of the loss the moment it may have happened, whatever the keeper is doing (a
/// renewal stuck in a slow store call cannot keep a lease alive past its end).
final class LeaseWatch: Sendable {
    private struct State {
        var lease: Lease
        /// When the lease ends by this process's monotonic clock, counted from before the claim (or
        /// the confirmed renewal) was sent, so it never ends later here than in the store.
        var localDeadline: MonotonicInstant
        var nextRenewal: MonotonicInstant
        /// A renewal of this lease is on its way to the store: the keeper sends no second one.
        var renewing = false
        /// Why the latest renewal got no answer, until one is confirmed: the cause of a loss by
        /// ``Loss/deadlinePassed`` when renewals kept failing.
        var renewalFailure: (any Error)?
    }

    /// Why a lease was lost, for the report.
    enum Loss: Sendable {
        /// The store refused the renewal: another consumer took the key over, or it was deleted.
        case refused
        /// The lease's local deadline passed before a renewal was confirmed.
        case deadlinePassed
    }

    private let state: Mutex<State>
    private let lost = Atomic<Bool>(false)
    private let retired = Atomic<Bool>(false)
    /// Called once, by whoever first sees the lease lost.
    private let onLoss: @Sendable (Lease, Loss) -> Void
    /// Tasks waiting in ``waitUntilLost()``, by a number so a cancelled waiter can leave.
    private let waiters = Mutex<(next: Int, continuations: [Int: CheckedContinuation<Void, Never>])>((0, [:]))

    /// A watch from the claim's start: `leaseNanoseconds` and `renewalNanoseconds` are the lease and
    /// the renewal interval, converted once by the keeper.
    init(
        lease: Lease,
        claimStarted: MonotonicInstant,
        leaseNanoseconds: Int64,
        renewalNanoseconds: Int64,
        onLoss: @escaping @Sendable (Lease, Loss) -> Void
    ) {
        state = Mutex(
            State(
                lease: lease,
                localDeadline: claimStarted.advanced(byNanoseconds: leaseNanoseconds),
                nextRenewal: claimStarted.advanced(byNanoseconds: renewalNanoseconds)
            )
        )
        self.onLoss = onLoss
    }

    /// `true` once the lease is lost: refused by the store, or its local deadline passed.
    var isLost: Bool {
        if lost.load(ordering: .acquiring) { return true }
        let passed = state.withLock { state -> Bool in
            guard MonotonicInstant.now >= state.localDeadline else { return false }
            return lost.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        }
        if passed { reportLoss(.deadlinePassed) }
        return lost.load(ordering: .acquiring)
    }

    /// `true` once the lease needs no more renewals: its registration ended, or its handler failed
    /// and it was released while the rest of its batch still runs.
    var isRetired: Bool { retired.load(ordering: .acquiring) }

    /// Stops the keeper renewing this lease; its batch registration may stay a while longer.
    func retire() {
        retired.store(true, ordering: .releasing)
    }

    /// Marks the lease lost because the store refused it; ignored once the watch is retired (a
    /// renewal that was on its way when the handler finished is refused by the completed record).
    func markRefused() {
        if isRetired { return }
        // Refused by an answer: an earlier renewal's failure is not why the lease is lost.
        state.withLock { $0.renewalFailure = nil }
        if lost.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            reportLoss(.refused)
        }
    }

    var currentLease: Lease { state.withLock { $0.lease } }

    /// The store's error for the latest renewal that got no answer, while none was confirmed since:
    /// what a lease lost by its deadline passing was lost to. `nil` when renewals were answered.
    var renewalFailure: (any Error)? { state.withLock { $0.renewalFailure } }

    /// Takes the lease for a renewal when one is due and none is on its way; the caller must then
    /// settle it with ``confirmRenewal(_:sentAt:leaseNanoseconds:renewalNanoseconds:)``,
    /// ``markRefused()`` or ``renewalFailed(_:)``.
    func takeForRenewal(now: MonotonicInstant) -> Lease? {
        if isRetired || isLost { return nil }
        return state.withLock { state in
            guard !state.renewing, state.nextRenewal <= now else { return nil }
            state.renewing = true
            return state.lease
        }
    }

    /// Records a renewal the store confirmed; one confirmed after the local deadline comes too late
    /// (the lease may have passed in between) and leaves the lease lost.
    func confirmRenewal(_ renewed: Lease, sentAt: MonotonicInstant, leaseNanoseconds: Int64, renewalNanoseconds: Int64)
    {
        let tooLate = state.withLock { state -> Bool in
            state.renewing = false
            if isRetired || lost.load(ordering: .acquiring) { return false }
            guard MonotonicInstant.now < state.localDeadline else {
                return lost.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
            }
            state.lease = renewed
            state.renewalFailure = nil
            state.localDeadline = sentAt.advanced(byNanoseconds: leaseNanoseconds)
            state.nextRenewal = sentAt.advanced(byNanoseconds: renewalNanoseconds)
            return false
        }
        if tooLate { reportLoss(.deadlinePassed) }
    }

    /// A renewal that got no answer, for `error`: the next round tries again (unless the deadline
    /// passes first, and the lease is lost to `error`).
    func renewalFailed(_ error: any Error) {
        state.withLock {
            $0.renewing = false
            $0.renewalFailure = error
        }
        _ = isLost
    }

    private func reportLoss(_ loss: Loss) {
        onLoss(currentLease, loss)
        let continuations = waiters.withLock { waiters in
            defer { waiters.continuations = [:] }
            return Array(waiters.continuations.values)
        }
        for continuation in continuations { continuation.resume() }
    }

    /// Returns once the lease is lost (refused, or its local deadline passed), or when the waiting
    /// task is cancelled.
    func waitUntilLost() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitUntilRefused() }
            group.addTask { await self.waitPastDeadlines() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Sleeps until the local deadline, again and again while renewals move it, until it passes.
    private func waitPastDeadlines() async {
        while !Task.isCancelled && !isLost {
            let remaining = state.withLock { $0.localDeadline }.nanoseconds(since: .now)
            try? await Task.sleep(for: .nanoseconds(max(remaining, 0) + 1))
        }
    }

    /// Returns once ``reportLoss(_:)`` ran, or when the waiting task is cancelled.
    private func waitUntilRefused() async {
        let number = waiters.withLock { waiters in
            waiters.next += 1
            return waiters.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = waiters.withLock { waiters -> Bool in
                    if lost.load(ordering: .acquiring) || Task.isCancelled { return true }
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
}
