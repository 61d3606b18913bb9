import Foundation
import OrderedCollections
import Synchronization

/// A bounded LRU of keys this process saw completed, each trusted for a short time. It never holds
/// in-flight keys: only a completion (ours or a duplicate answer) puts a key in.
final class LocalCache: Sendable {
    private struct Entry {
        var record: DedupRecord
        var until: ContinuousClock.Instant
    }

    private let entries = Mutex(OrderedDictionary<RecordID, Entry>())
    private let capacity: Int
    private let timeToLive: Duration

    init(_ configuration: LocalCacheConfiguration) {
        capacity = configuration.capacity
        timeToLive = configuration.timeToLive
    }

    /// The cached completed record, if it is still fresh.
    func completedRecord(for id: RecordID) -> DedupRecord? {
        let now = ContinuousClock.now
        return entries.withLock { entries -> DedupRecord? in
            guard let index = entries.index(forKey: id) else { return nil }
            let entry = entries.values[index]
            entries.remove(at: index)
            // Never outlive the record itself (a retention shorter than the cache's time to live).
            guard entry.until > now, entry.record.expiresAt > Date() else { return nil }
            // Re-insert at the end: most recently used.
            entries[id] = entry
            return entry.record
        }
    }

    /// Remembers a completed record.
    func insert(_ record: DedupRecord) {
        guard record.state == .completed else { return }
        let entry = Entry(record: record, until: ContinuousClock.now + timeToLive)
        entries.withLock { entries in
            entries.removeValue(forKey: record.id)
            entries[record.id] = entry
            if entries.count > capacity {
                entries.removeFirst(entries.count - capacity)
            }
        }
    }
}
