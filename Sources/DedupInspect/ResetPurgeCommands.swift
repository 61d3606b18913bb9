import ArgumentParser
import Dedup
import Foundation

/// `reset`: delete the completed records of a namespace in a time range, so that an intentional
/// replay of that range (a consumer group's offset reset to a timestamp) applies those messages again.
struct ResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Delete the completed records of a namespace in a time range before a replay (dry run unless --yes).",
        discussion: """
            Deletes COMPLETED records of --namespace whose time is in [--from, --until), optionally \
            only keys with --key-prefix; in-flight records are never touched, and neither is any other \
            namespace. A record's time is its broker time (when the broker took the message) where the \
            consumer passed one, else its completion time: so replaying a broker range afterwards \
            re-applies exactly the messages published in it, however far behind the consumer ran; \
            messages outside the range stay duplicates.

            Without --yes, counts what would be deleted and what share of the namespace's records that \
            is, shows the first records (--sample), and changes nothing. With --yes, deletes page by \
            page (each record only if it still matches), so memory stays flat however many records \
            match, and reports how many were deleted. At least one of --from and --until is required, \
            or --all-time to reset the whole namespace. Exits 1 when nothing matched (a mistyped \
            namespace would otherwise go unnoticed).

            A range that takes more than --max-share of the namespace's records (a time in the wrong \
            unit, a range of days typed for one of hours) is refused with --yes (exit 2, nothing \
            deleted) unless --all-matching confirms it; --all-time says so already.

            Consumers with a local cache (off by default) honour a reset once their cache entries \
            expire (30 s by default): replay after that.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "The namespace (consumer group) to reset.")
    var namespace: String

    @Option(
        help: ArgumentHelp(
            "Reset records published (broker time; completed, for records without one) at or after this: \(Timestamp.accepted).",
            valueName: "time"),
        transform: TimeArgument.parsing)
    var from: TimeArgument?

    @Option(
        help: ArgumentHelp("Reset records published (or completed, as for --from) before this (same spellings as --from).", valueName: "time"),
        transform: TimeArgument.parsing)
    var until: TimeArgument?

    @Flag(help: "Reset the whole namespace, whatever the broker or completion time.")
    var allTime = false

    @Option(help: "Only keys starting with this prefix.")
    var keyPrefix: String?

    @Flag(help: "Really delete.")
    var yes = false

    @Option(help: ArgumentHelp("With --yes, refuse to delete more than this percentage of the namespace's records without --all-matching.", valueName: "percent"))
    var maxShare = 50

    @Flag(help: "Confirm a reset that takes more than --max-share of the namespace.")
    var allMatching = false

    @Option(help: "In a dry run, show this many of the matching records.")
    var sample = 10

    @Option(help: "Records fetched and deleted per round trip.")
    var batchSize = 1000

    func validate() throws {
        do { try RecordID.validate(namespace: namespace) } catch { throw ValidationError("--namespace: \(error.message)") }
        if from == nil && until == nil && !allTime {
            throw ValidationError("give the time range to reset with --from and/or --until, or --all-time for the whole namespace")
        }
        if allTime && (from != nil || until != nil) {
            throw ValidationError("--all-time cannot be combined with --from or --until")
        }
        if let from, let until, from.milliseconds >= until.milliseconds {
            throw ValidationError("--from (\(Timestamp.format(milliseconds: from.milliseconds))) must be before --until (\(Timestamp.format(milliseconds: until.milliseconds)))")
        }
        if !(0...100).contains(maxShare) { throw ValidationError("--max-share must be a percentage from 0 to 100") }
        if sample < 0 { throw ValidationError("--sample must be 0 or more") }
        if batchSize < 1 || batchSize > 100_000 { throw ValidationError("--batch-size must be between 1 and 100000") }
    }

    /// What a reset found and did, for both formats.
    private struct Tally {
        var matched = 0
        var deleted = 0
        var samples: [DedupRecord] = []
        /// The namespace's live records (in flight and completed), when counted.
        var namespaceRecords: Int?
    }

    func run() async throws {
        try await Session.run(global) { session, store in
            let store = store!
            let filter = RecordFilter(namespace: namespace, state: .completed, from: from?.date, until: until?.date, keyPrefix: keyPrefix)
            let now = session.now
            var tally = Tally()
            session.onError = { error, status in
                if tally.deleted > 0 { StandardError.write("dedup-inspect: deleted \(counted(tally.deleted, "record")) before the error\n") }
                if session.json { session.document(document(tally, now: now, error: Session.errorObject(error, status: status))) }
            }
            let guarded = !yes || !(allTime || allMatching)
            if guarded {
                tally.namespaceRecords = try await store.stats().namespaces.first { $0.namespace == namespace }.map { $0.inFlight + $0.completed } ?? 0
                try await count(filter, in: store, into: &tally)
            }
            if yes, exceedsMaxShare(tally) {
                return refuse(tally, session: session, now: now)
            }
            if yes {
                // The samples show a refused or dry run; deleted records are counted, not listed.
                tally.samples = []
                try await delete(filter, in: store, into: &tally)
            }
            session.onError = nil

            if session.json {
                session.document(document(tally, now: now, error: nil))
            } else {
                report(tally, to: session.out)
            }
            if tally.matched == 0 {
                StandardError.write("dedup-inspect: nothing matched: no completed records of namespace \(displayed(namespace)) \(rangeDescription)\n")
                return .notFound
            }
            return .success
        }
    }

    /// Counts the matching records (a dry run, or the check before deleting), keeping the samples.
    private func count(_ filter: RecordFilter, in store: any DedupStore, into tally: inout Tally) async throws {
        let progress = ProgressLine(mode: global.progress, verb: "counted")
        defer { progress.finish() }
        var cursor: PageCursor?
        repeat {
            let page = try await store.records(matching: filter, after: cursor, limit: batchSize)
            cursor = page.next
            tally.matched += page.records.count
            if tally.samples.count < sample { tally.samples += page.records.prefix(sample - tally.samples.count) }
            progress.update(tally.matched)
        } while cursor != nil
    }

    /// Deletes the matching records page by page, each only if it still matches.
    private func delete(_ filter: RecordFilter, in store: any DedupStore, into tally: inout Tally) async throws {
        let progress = ProgressLine(mode: global.progress, verb: "deleted")
        defer { progress.finish() }
        tally.matched = 0
        // A scan-ordered store (Redis) may skip records in a listing while others are deleted
        // under it, so deleting runs whole passes until one finds nothing left. On SQLite
        // (keyset paging) the second pass is one empty indexed query.
        var passes = 0
        var deletedThisPass = 0
        repeat {
            passes += 1
            deletedThisPass = 0
            var cursor: PageCursor?
            repeat {
                let page = try await store.records(matching: filter, after: cursor, limit: batchSize)
                cursor = page.next
                if passes == 1 { tally.matched += page.records.count }
                // Delete what this page found, each only if it still matches (a record claimed
                // again meanwhile is no longer completed and is left alone).
                if !page.records.isEmpty {
                    let count = try await store.delete(page.records.map(\.id), matching: filter)
                    tally.deleted += count
                    deletedThisPass += count
                    if passes > 1 { tally.matched += count }
                }
                progress.update(tally.deleted)
            } while cursor != nil
        } while deletedThisPass > 0 && passes < 100
    }

    /// Whether the matching records are more than `--max-share` of the namespace's and nothing
    /// confirmed that.
    private func exceedsMaxShare(_ tally: Tally) -> Bool {
        guard let total = tally.namespaceRecords, !allTime, !allMatching else { return false }
        return tally.matched * 100 > maxShare * total
    }

    /// `N of the namespace's M records (P%)`.
    private func share(_ tally: Tally) -> String? {
        guard let total = tally.namespaceRecords else { return nil }
        return "\(grouped(tally.matched)) of the namespace's \(counted(total, "record")) (\(percentage(tally.matched, of: total)))"
    }

    /// Refuses a --yes reset over more than --max-share: exit 2, nothing deleted.
    private func refuse(_ tally: Tally, session: Session, now: Int64) -> ExitStatus {
        let message = "refusing to delete \(counted(tally.matched, "completed record")) of namespace \(displayed(namespace)) \(rangeDescription): "
            + "that is \(share(tally) ?? ""), more than --max-share \(maxShare)%. Check the range (a Unix time in seconds "
            + "is written 1714564800s); to delete them all, run again with --all-matching"
        StandardError.write("dedup-inspect: \(message)\n")
        session.onError = nil
        if session.json {
            session.document(document(tally, now: now, error: Session.errorObject(code: "confirmationRequired", message: message, status: .usage)))
        }
        return .usage
    }

    private func report(_ tally: Tally, to out: OutputSink) {
        let range = rangeDescription
        if tally.matched == 0 {
            out.line("no completed records of namespace \(displayed(namespace)) \(range)")
        } else if yes {
            out.line("deleted \(counted(tally.deleted, "completed record")) of namespace \(displayed(namespace)) \(range)")
            if tally.deleted < tally.matched {
                out.line("(\(grouped(tally.matched - tally.deleted)) matched but changed or vanished before deletion and were left alone)")
            }
        } else {
            var table = TextTable(RecordRendering.listHeaders, rightAligned: RecordRendering.listRightAligned)
            for record in tally.samples { table.append(RecordRendering.listRow(record)) }
            if !tally.samples.isEmpty { out.write(table.render()) }
            if tally.samples.count < tally.matched { out.line("... and \(grouped(tally.matched - tally.samples.count)) more") }
            out.line("")
            out.line("dry run: would delete \(counted(tally.matched, "completed record")) of namespace \(displayed(namespace)) \(range)")
            if let share = share(tally) {
                let over = tally.matched * 100 > maxShare * (tally.namespaceRecords ?? 0) && !allTime
                out.line("that is \(share)" + (over ? ", more than --max-share \(maxShare)%: --yes needs --all-matching too" : ""))
            }
            out.line("run again with --yes to delete them")
        }
    }

    private var rangeDescription: String {
        var text: String
        switch (from, until) {
        case let (from?, until?): text = "published in [\(Timestamp.format(milliseconds: from.milliseconds)), \(Timestamp.format(milliseconds: until.milliseconds)))"
        case let (from?, nil): text = "published at or after \(Timestamp.format(milliseconds: from.milliseconds))"
        case let (nil, until?): text = "published before \(Timestamp.format(milliseconds: until.milliseconds))"
        case (nil, nil): text = "(all time)"
        }
        // Says which time selects, as the filter does (RecordFilter: broker time where present).
        if from != nil || until != nil { text += " (by broker time; by completion time for records without one)" }
        if let keyPrefix { text += " with keys starting \(keyPrefix.debugDescription)" }
        return text
    }

    private func document(_ tally: Tally, now: Int64, error: JSONValue?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("dry_run", .bool(!yes)),
            ("namespace", .string(namespace)),
            ("from", from.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("from_ms", from.map { .int($0.milliseconds) } ?? .null),
            ("until", until.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("until_ms", until.map { .int($0.milliseconds) } ?? .null),
            ("key_prefix", .string(keyPrefix)),
            ("matched", .int(Int64(tally.matched))),
            ("deleted", .int(Int64(tally.deleted))),
            ("namespace_records", .int(tally.namespaceRecords)),
            ("max_share_percent", .int(Int64(maxShare))),
            ("sample", .array(tally.samples.map { RecordRendering.json($0, now: now, includeResult: false) })),
        ]
        if let error { members.append(("error", error)) }
        return .object(members)
    }
}

/// `purge`: delete expired records now rather than waiting for the store's own cleanup.
struct PurgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract: "Delete expired records (dry run unless --yes).",
        discussion: """
            Expired records (completed past their retention, abandoned claims past their expiry) are \
            already treated as absent everywhere; purging reclaims their space. Without --yes, reports \
            how many are expired (stats counts them too) and changes nothing. With --yes, deletes them \
            in batches and reports how many were removed. Redis expires records by itself: nothing \
            is ever left to purge there.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Really delete.")
    var yes = false

    @Option(help: "Records deleted per store call.")
    var batchSize = 1000

    func validate() throws {
        if batchSize < 1 || batchSize > 100_000 { throw ValidationError("--batch-size must be between 1 and 100000") }
    }

    func run() async throws {
        try await Session.run(global) { session, store in
            let store = store!
            var deleted = 0
            var expired: Int?
            session.onError = { error, status in
                if deleted > 0 { StandardError.write("dedup-inspect: deleted \(counted(deleted, "expired record")) before the error\n") }
                if session.json { session.document(document(expired: expired, deleted: deleted, error: (error, status))) }
            }
            // Counted first with --yes too: the JSON says how many there were, and a Redis server
            // (which expires records itself) is still asked, so a wrong password fails here.
            let found = try await StoreAccess.countExpired(in: store).values.reduce(0, +)
            expired = found
            if yes {
                let progress = ProgressLine(mode: global.progress, verb: "purged")
                defer { progress.finish() }
                while true {
                    let count = try await store.purgeExpired(limit: batchSize)
                    deleted += count
                    progress.update(deleted)
                    if count < batchSize { break }
                }
            }
            session.onError = nil
            if session.json {
                session.document(document(expired: expired, deleted: deleted, error: nil))
            } else if yes {
                session.out.line("purged \(counted(deleted, "expired record"))")
            } else {
                session.out.line("dry run: would delete \(counted(found, "expired record")); run again with --yes to delete them")
            }
            return .success
        }
    }

    private func document(expired: Int?, deleted: Int, error: (DedupError, ExitStatus)?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("dry_run", .bool(!yes)),
            ("expired", .int(expired)),
            ("deleted", .int(Int64(deleted))),
        ]
        if let (error, status) = error { members.append(("error", Session.errorObject(error, status: status))) }
        return .object(members)
    }
}
