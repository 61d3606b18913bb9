import Logging
import Synchronization

/// Renews the leases of running handlers: one background task per consumer, started when a handler
/// is registered and ending once none is, so a fast handler costs a lock and a dictionary insert,
/// not a task of its own.
final class LeaseKeeper: Sendable {
    private struct State {
        /// Registrations: one lease, or a batch's leases under one entry.
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
        var running = false
    }

    private enum Entry {
        case single(LeaseWatch)
        case batch([LeaseWatch])
    }

    private let state = Mutex(State())
    private let store: any DedupStore
    private let leaseDuration: Duration
    private let renewalInterval: Duration
    private let tick: Duration
    private let metrics: ConsumerMetrics
    private let logger: Logger

    init(store: any DedupStore, lease: Duration, renewalInterval: Duration, metrics: ConsumerMetrics, logger: Logger) {
        self.store = store
        self.leaseDuration = lease
        self.renewalInterval = renewalInterval
        // Wake a few times per interval so a renewal is never much later than due.
        self.tick = renewalInterval / 4
        self.metrics = metrics
        self.logger = logger
    }

    /// Starts watching a lease; returns the handle to pass to ``unregister(_:)``.
    func register(_ lease: Lease, claimStarted: ContinuousClock.Instant) -> (UInt64, LeaseWatch) {
        let watch = makeWatch(lease, claimStarted: claimStarted)
        return (add(.single(watch)), watch)
    }

    /// Starts watching a batch's leases under one registration (one lock and one entry for the
    /// batch, not one per message); returns the handle to pass to ``unregister(_:)`` and a watch
    /// per lease, in order.
    func register(batch leases: [Lease], claimStarted: ContinuousClock.Instant) -> (UInt64, [LeaseWatch]) {
        let watches = leases.map { makeWatch($0, claimStarted: claimStarted) }
        return (add(.batch(watches)), watches)
    }

    /// Stops watching; the leases' final state is in their watches.
    func unregister(_ id: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    private func makeWatch(_ lease: Lease, claimStarted: ContinuousClock.Instant) -> LeaseWatch {
        LeaseWatch(lease: lease, claimStarted: claimStarted, leaseDuration: leaseDuration, renewalInterval: renewalInterval)
    }

    private func add(_ entry: Entry) -> UInt64 {
        let (id, start) = state.withLock { state -> (UInt64, Bool) in
            state.nextID &+= 1
            state.entries[state.nextID] = entry
            let start = !state.running
            state.running = true
            return (state.nextID, start)
        }
        if start {
            Task { await self.run() }
        }
        return id
    }

    private func run() async {
        let clock = ContinuousClock()
        while true {
            try? await clock.sleep(for: tick)
            let due: [LeaseWatch]? = state.withLock { state in
                if state.entries.isEmpty {
                    state.running = false
                    return nil
                }
                let now = clock.now
                let isDue = { (watch: LeaseWatch) in watch.state.withLock { $0.nextRenewal <= now } }
                var due: [LeaseWatch] = []
                for entry in state.entries.values {
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
                await renew(watch, clock: clock)
            }
        }
    }

    private func renew(_ watch: LeaseWatch, clock: ContinuousClock) async {
        let lease = watch.currentLease
        let started = clock.now
        do {
            let renewed = try await store.renew(lease, for: leaseDuration)
            watch.state.withLock { state in
                state.lease = renewed
                state.localDeadline = started + leaseDuration
                state.nextRenewal = started + renewalInterval
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
            let pastDeadline = watch.state.withLock { clock.now >= $0.localDeadline }
            if pastDeadline {
                watch.markLost()
                metrics.leaseLosses.increment()
                logger.warning(
                    "lease could not be renewed before it ended",
                    metadata: ["dedup.id": "\(lease.id)", "error": "\(error)"]
                )
            } else {
                watch.state.withLock { $0.nextRenewal = clock.now }
            }
        }
    }
}
