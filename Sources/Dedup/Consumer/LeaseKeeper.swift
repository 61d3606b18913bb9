import Logging
import Synchronization

/// Renews the leases of running handlers: one background task per consumer, started when a handler
/// is registered and ending once none is, so a fast handler costs a lock and a dictionary insert,
/// not a task of its own.
final class LeaseKeeper: Sendable {
    private struct State {
        var watches: [UInt64: LeaseWatch] = [:]
        var nextID: UInt64 = 0
        var running = false
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
        let watch = LeaseWatch(
            lease: lease, claimStarted: claimStarted, leaseDuration: leaseDuration, renewalInterval: renewalInterval
        )
        let (id, start) = state.withLock { state -> (UInt64, Bool) in
            state.nextID &+= 1
            state.watches[state.nextID] = watch
            let start = !state.running
            state.running = true
            return (state.nextID, start)
        }
        if start {
            Task { await self.run() }
        }
        return (id, watch)
    }

    /// Stops watching; the lease's final state is in the watch.
    func unregister(_ id: UInt64) {
        _ = state.withLock { $0.watches.removeValue(forKey: id) }
    }

    private func run() async {
        let clock = ContinuousClock()
        while true {
            try? await clock.sleep(for: tick)
            let due: [LeaseWatch]? = state.withLock { state in
                if state.watches.isEmpty {
                    state.running = false
                    return nil
                }
                let now = clock.now
                return state.watches.values.filter { watch in
                    watch.state.withLock { $0.nextRenewal <= now }
                }
            }
            guard let due else { return }
            for watch in due where !watch.isLost {
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
