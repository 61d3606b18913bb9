import Logging
import Synchronization

/// Renews the leases of running handlers: one background task per consumer, started when a handler
/// is registered and ending once none is, so a fast handler costs a lock and a slot in an array,
/// not a task of its own.
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

    init(store: any DedupStore, lease: Duration, renewalInterval: Duration, metrics: ConsumerMetrics, logger: Logger) {
        self.store = store
        self.leaseDuration = lease
        self.leaseNanoseconds = lease.saturatingNanoseconds
        self.renewalNanoseconds = renewalInterval.saturatingNanoseconds
        // Wake a few times per interval so a renewal is never much later than due.
        self.tick = renewalInterval / 4
        self.metrics = metrics
        self.logger = logger
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
        _ = entry
    }

    private func makeWatch(_ lease: Lease, claimStarted: MonotonicInstant) -> LeaseWatch {
        LeaseWatch(lease: lease, claimStarted: claimStarted, leaseNanoseconds: leaseNanoseconds, renewalNanoseconds: renewalNanoseconds)
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
        while true {
            try? await clock.sleep(for: tick)
            let due: [LeaseWatch]? = state.withLock { state in
                if state.registered == 0 {
                    state.running = false
                    return nil
                }
                let now = MonotonicInstant.now
                let isDue = { (watch: LeaseWatch) in watch.state.withLock { $0.nextRenewal <= now } }
                var due: [LeaseWatch] = []
                for case let entry? in state.slots {
                    switch entry {
                    case .single(let watch): if isDue(watch) { due.append(watch) }
                    case .batch(let watches): due += watches.filter(isDue)
                    }
                }
                return due
            }
            guard let due else { return }
            // Checked at each one's turn: an earlier renewal's wait may have seen it lost.
            for watch in due where !watch.isLost && !watch.isRetired {
                await renew(watch)
            }
        }
    }

    private func renew(_ watch: LeaseWatch) async {
        let lease = watch.currentLease
        let started = MonotonicInstant.now
        do {
            let renewed = try await store.renew(lease, for: leaseDuration)
            watch.state.withLock { state in
                state.lease = renewed
                state.localDeadline = started.advanced(byNanoseconds: leaseNanoseconds)
                state.nextRenewal = started.advanced(byNanoseconds: renewalNanoseconds)
            }
            metrics.leaseRenewals.increment()
        } catch let error as DedupError where error.code == .leaseLost {
            watch.markLost()
            metrics.leaseLosses.increment()
            logger.warning("lease lost while the handler ran", metadata: ["dedup.id": "\(lease.id)"])
        } catch {
            metrics.storeError(error)
            // The store did not answer: keep trying each tick, but once the lease may have ended in
            // the store another consumer may hold it, so the result must not be recorded.
            let pastDeadline = watch.state.withLock { MonotonicInstant.now >= $0.localDeadline }
            if pastDeadline {
                watch.markLost()
                metrics.leaseLosses.increment()
                logger.warning(
                    "lease could not be renewed before it ended",
                    metadata: ["dedup.id": "\(lease.id)", "error": "\(error)"]
                )
            } else {
                watch.state.withLock { $0.nextRenewal = MonotonicInstant.now }
            }
        }
    }
}
