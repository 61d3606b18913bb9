import Synchronization

/// The entries being processed, bounded: the read loop waits for a free slot before reading, and
/// skips an entry read again while its handler still runs here (a redelivery of it would only be
/// deferred by the dedup store, and would count a delivery for nothing).
final class InFlightEntries: Sendable {
    private struct State {
        var ids: Set<StreamEntryID> = []
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// How many more entries may start; waits until at least one may.
    func freeSlots() async -> Int {
        while true {
            let free = state.withLock { limit - $0.ids.count }
            if free > 0 { return free }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.ids.count < limit { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// Whether the entry is being processed here.
    func contains(_ id: StreamEntryID) -> Bool {
        state.withLock { $0.ids.contains(id) }
    }

    /// Registers the entries of `read` not already in flight, and returns them.
    func start(_ entries: [StreamEntry]) -> [StreamEntry] {
        state.withLock { state in entries.filter { state.ids.insert($0.id).inserted } }
    }

    /// Unregisters finished entries, waking the read loop if it waits for a slot.
    func finish(_ ids: [StreamEntryID]) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            for id in ids { state.ids.remove(id) }
            guard state.ids.count < limit, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
}
