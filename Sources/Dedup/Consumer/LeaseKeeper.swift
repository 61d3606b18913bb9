import Logging
import Synchronization

/// Renews the leases of running handlers: one background task per consumer, started when a handler
/// is registered and ending once none is, so a fast handler costs a lock and a slot in an array,
/// not a task of its own.
///
/// Each round renews every due lease together, in one ``DedupStore/renew(batch:for:)`` call (one
/// round trip or transaction where the store can), so N running handlers cost one store call a
/// round, not N calls one after another. A round that is still waiting on the store does not hold
/// up the next: leases that fall due meanwhile go in a round of their own.
final class LeaseKeeper: Sendable {
    private struct State {
        /// Registrations by slot, one lease or a batch's leases under one entry; `nil` is a free slot.
        var slots: [Entry?] = []
        /// Free slots; the last freed is reused first, so the array stays as long as the most
        /// registrations there ever were at once.
        var free: [Int] = []
        /// How many slots hold a registration.
        var registered = 0
        var running = false
    }

    private enum Entry {
        case single(LeaseWatch)
        case batch([LeaseWatch])
    }

    private let state = Mutex(State())
    private let store: any DedupStore
    private let leaseDuration: Duration
    /// The lease in nanoseconds, converted once for the watches' deadlines.
    private let leaseNanoseconds: Int64
    /// The renewal interval in nanoseconds, converted once for the watches' renewal times.
    private let renewalNanoseconds: Int64
    private let tick: Duration
    private let metrics: ConsumerMetrics
    private let logger: Logger
    /// Counts and logs a lost lease, once per lease, whoever sees it first.
    private let reportLoss: @Sendable (Lease, LeaseWatch.Loss) -> Void

    init(store: any DedupStore, lease: Duration, renewalInterval: Duration, metrics: ConsumerMetrics, logger: Logger) {
        self.store = store
        self.leaseDuration = lease
        self.leaseNanoseconds = lease.saturatingNanoseconds
        self.renewalNanoseconds = renewalInterval.saturatingNanoseconds
        // Wake a few times per interval so a renewal is never much later than due.
        self.tick = renewalInterval / 4
        self.metrics = metrics
        self.logger = logger
        self.reportLoss = { lease, loss in
            metrics.leaseLosses.increment()
            let message: Logger.Message =
                switch loss {
                case .refused: "lease lost while the handler ran: the store refused its renewal (taken over or deleted)"
                case .deadlinePassed: "lease lost while the handler ran: its end passed before a renewal was confirmed"
                }
            logger.warning(message, metadata: ["dedup.id": "\(lease.id)", "dedup.fencing": "\(lease.fencingToken)"])
        }
    }

    /// Starts watching a lease; returns the handle to pass to ``unregister(_:)``.
    func register(_ lease: Lease, claimStarted: MonotonicInstant) -> (Int, LeaseWatch) {
        let watch = makeWatch(lease, claimStarted: claimStarted)
        return (add(.single(watch)), watch)
    }

    /// Starts watching a batch's leases under one registration (one lock and one entry for the
    /// batch, not one per message); returns the handle to pass to ``unregister(_:)`` and a watch
    /// per lease, in order.
    func register(batch leases: [Lease], claimStarted: MonotonicInstant) -> (Int, [LeaseWatch]) {
        let watches = leases.map { makeWatch($0, claimStarted: claimStarted) }
        return (add(.batch(watches)), watches)
    }

    /// Stops watching; the leases' final state is in their watches. A slot already freed is left
    /// alone (freeing it twice would hand it to two registrations).
    func unregister(_ slot: Int) {
        // Taken out under the lock and dropped after it: the watches may go with it.
        let entry = state.withLock { state -> Entry? in
            guard let entry = state.slots[slot] else {
                assertionFailure("lease registration \(slot) unregistered twice")
                return nil
            }
            state.slots[slot] = nil
            state.free.append(slot)
            state.registered -= 1
            return entry
        }
        // A renewal still on its way must not report these leases lost when the store refuses it
        // (their records are completed or released by now).
        switch entry {
        case .single(let watch)?: watch.retire()
        case .batch(let watches)?: watches.forEach { $0.retire() }
        case nil: break
        }
    }

    private func makeWatch(_ lease: Lease, claimStarted: MonotonicInstant) -> LeaseWatch {
        LeaseWatch(
            lease: lease,
            claimStarted: claimStarted,
            leaseNanoseconds: leaseNanoseconds,
            renewalNanoseconds: renewalNanoseconds,
            onLoss: reportLoss
        )
    }

    private func add(_ entry: Entry) -> Int {
        let (slot, start) = state.withLock { state -> (Int, Bool) in
            let slot: Int
            if let reused = state.free.popLast() {
                slot = reused
                state.slots[slot] = entry
            } else {
                slot = state.slots.count
                state.slots.append(entry)
            }
            state.registered += 1
            let start = !state.running
            state.running = true
            return (slot, start)
        }
        if start {
            Task { await self.run() }
        }
        return slot
    }

    private func run() async {
        let clock = ContinuousClock()
        await withDiscardingTaskGroup { rounds in
            while true {
                try? await clock.sleep(for: tick)
                guard let due = takeDue() else { return }
                if due.isEmpty { continue }
                rounds.addTask { await self.renew(due) }
            }
        }
    }

    /// The watches whose renewal is due, each taken for renewal; `nil` when nothing is registered
    /// any more (the keeper then stops).
    private func takeDue() -> [(watch: LeaseWatch, lease: Lease)]? {
        state.withLock { state in
            if state.registered == 0 {
                state.running = false
                return nil
            }
            let now = MonotonicInstant.now
            var due: [(watch: LeaseWatch, lease: Lease)] = []
            func take(_ watch: LeaseWatch) {
                if let lease = watch.takeForRenewal(now: now) { due.append((watch, lease)) }
            }
            for case let entry? in state.slots {
                switch entry {
                case .single(let watch): take(watch)
                case .batch(let watches): watches.forEach(take)
                }
            }
            return due
        }
    }

    /// One round: every due lease in one batch call.
    private func renew(_ due: [(watch: LeaseWatch, lease: Lease)]) async {
        let sent = MonotonicInstant.now
        do {
            let answers = try await store.renew(batch: due.map(\.lease), for: leaseDuration)
            guard answers.count == due.count else {
                throw DedupError(.storeError, "the store answered \(answers.count) renewals for \(due.count) leases")
            }
            for (entry, answer) in zip(due, answers) {
                switch answer {
                case .renewed(let renewed):
                    entry.watch.confirmRenewal(
                        renewed,
                        sentAt: sent,
                        leaseNanoseconds: leaseNanoseconds,
                        renewalNanoseconds: renewalNanoseconds
                    )
                    metrics.leaseRenewals.increment()
                case .leaseLost:
                    entry.watch.markRefused()
                }
            }
        } catch {
            // The store did not answer: the next round tries again, unless the lease's end passes
            // first (then it is lost: another consumer may hold it by now).
            metrics.storeError(error)
            logger.debug("lease renewal failed; retrying", metadata: ["leases": "\(due.count)", "error": "\(error)"])
            for entry in due { entry.watch.renewalFailed(error) }
        }
    }
}
