import Dedup
import DedupRedisStreams
import Foundation

/// A coordinated replay of the broker range [`from`, `until`): the two steps
/// `dedup-inspect replay --yes` takes, done here in-process on the demo's store and stream.
///
/// First the completed dedup records whose broker time lies in the range are deleted (so the
/// entries of the range apply again), then the group is moved to just before `from`
/// (`XGROUP SETID` to ``StreamEntryID/justBefore(_:)``, so the entry at `from` itself comes
/// again). Entries after `until` come again too and are skipped as duplicates.
enum StreamReplay {
    /// What the replay did.
    struct Result: Sendable {
        /// Records reset (deleted).
        var resetRecords: Int
        /// The ID the group was moved to.
        var groupPosition: StreamEntryID
    }

    static func run(
        store: any DedupStore, namespace: String, admin: StreamAdmin, group: String, from: Date, until: Date
    ) async throws -> Result {
        let filter = RecordFilter(namespace: namespace, state: .completed, from: from, until: until)
        var reset = 0
        var cursor: PageCursor?
        repeat {
            let page = try await store.records(matching: filter, after: cursor, limit: 500)
            if !page.records.isEmpty { reset += try await store.delete(page.records.map(\.id), matching: filter) }
            cursor = page.next
        } while cursor != nil
        let position = StreamEntryID.justBefore(from)
        try await admin.run("XGROUP", "SETID", admin.location.stream, group, position.description)
        return Result(resetRecords: reset, groupPosition: position)
    }
}
