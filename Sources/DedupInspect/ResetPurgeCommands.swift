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
            Deletes COMPLETED records of --namespace whose completion time is in [--from, --until), \
            optionally only keys with --key-prefix; in-flight records are never touched, and neither \
            is any other namespace. Replaying that range afterwards re-applies exactly those messages; \
            messages completed outside the range stay duplicates.

            Without --yes, counts what would be deleted, shows the first records (--sample), and \
            changes nothing. With --yes, deletes page by page (each record only if it still matches), \
            so memory stays flat however many records match, and reports how many were deleted. At \
            least one of --from and --until is required, or --all-time to reset the whole namespace. \
            Exits 1 when nothing matched (a mistyped namespace would otherwise go unnoticed).

            Consumers with a local cache (off by default) honour a reset once their cache entries \
            expire (30 s by default): replay after that.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "The namespace (consumer group) to reset.")
    var namespace: String

    @Option(help: ArgumentHelp("Reset records completed at or after this: ISO 8601 or Unix milliseconds.", valueName: "time"))
    var from: TimeArgument?

    @Option(help: ArgumentHelp("Reset records completed before this: ISO 8601 or Unix milliseconds.", valueName: "time"))
    var until: TimeArgument?

    @Flag(help: "Reset the whole namespace, whatever the completion time.")
    var allTime = false

    @Option(help: "Only keys starting with this prefix.")
    var keyPrefix: String?

    @Flag(help: "Really delete.")
    var yes = false

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
        if sample < 0 { throw ValidationError("--sample must be 0 or more") }
        if batchSize < 1 || batchSize > 100_000 { throw ValidationError("--batch-size must be between 1 and 100000") }
    }

    func run() async throws {
        try await Session.run(global) { session, store in
            let store = store!
            let filter = RecordFilter(namespace: namespace, state: .completed, from: from?.date, until: until?.date, keyPrefix: keyPrefix)
            let progress = ProgressLine(mode: global.progress, verb: yes ? "deleted" : "counted")
            let now = session.now
            var matched = 0
            var deleted = 0
            var samples: [DedupRecord] = []
            var cursor: PageCursor?

            session.onError = { error, status in
                progress.finish()
                if deleted > 0 { StandardError.write("dedup-inspect: deleted \(deleted) records before the error\n") }
                if session.json { session.document(document(matched: matched, deleted: deleted, samples: samples, now: now, error: (error, status))) }
            }
            // A scan-ordered store (Redis) may skip records in a listing while others are deleted
            // under it, so deleting runs whole passes until one finds nothing left. On SQLite
            // (keyset paging) the second pass is one empty indexed query.
            var passes = 0
            var deletedThisPass = 0
            repeat {
                passes += 1
                deletedThisPass = 0
                cursor = nil
                repeat {
                    let page = try await store.records(matching: filter, after: cursor, limit: batchSize)
                    cursor = page.next
                    if passes == 1 { matched += page.records.count }
                    if yes {
                        // Delete what this page found, each only if it still matches (a record
                        // claimed again meanwhile is no longer completed and is left alone).
                        if !page.records.isEmpty {
                            let count = try await store.delete(page.records.map(\.id), matching: filter)
                            deleted += count
                            deletedThisPass += count
                            if passes > 1 { matched += count }
                        }
                        progress.update(deleted)
                    } else {
                        if samples.count < sample { samples += page.records.prefix(sample - samples.count) }
                        progress.update(matched)
                    }
                } while cursor != nil
            } while yes && deletedThisPass > 0 && passes < 100
            progress.finish()
            session.onError = nil

            if session.json {
                session.document(document(matched: matched, deleted: deleted, samples: samples, now: now, error: nil))
            } else {
                let out = session.out
                let range = rangeDescription
                if matched == 0 {
                    out.line("no completed records of namespace \(displayed(namespace)) \(range)")
                } else if yes {
                    out.line("deleted \(grouped(deleted)) completed records of namespace \(displayed(namespace)) \(range)")
                    if deleted < matched {
                        out.line("(\(grouped(matched - deleted)) matched but changed or vanished before deletion and were left alone)")
                    }
                } else {
                    var table = TextTable(RecordRendering.listHeaders, rightAligned: RecordRendering.listRightAligned)
                    for record in samples { table.append(RecordRendering.listRow(record)) }
                    if !samples.isEmpty { out.write(table.render()) }
                    if samples.count < matched { out.line("... and \(grouped(matched - samples.count)) more") }
                    out.line("")
                    out.line("dry run: would delete \(grouped(matched)) completed records of namespace \(displayed(namespace)) \(range)")
                    out.line("run again with --yes to delete them")
                }
            }
            if matched == 0 {
                StandardError.write("dedup-inspect: nothing matched: no completed records of namespace \(displayed(namespace)) \(rangeDescription)\n")
                return .notFound
            }
            return .success
        }
    }

    private var rangeDescription: String {
        var text: String
        switch (from, until) {
        case let (from?, until?): text = "completed in [\(Timestamp.format(milliseconds: from.milliseconds)), \(Timestamp.format(milliseconds: until.milliseconds)))"
        case let (from?, nil): text = "completed at or after \(Timestamp.format(milliseconds: from.milliseconds))"
        case let (nil, until?): text = "completed before \(Timestamp.format(milliseconds: until.milliseconds))"
        case (nil, nil): text = "(all time)"
        }
        if let keyPrefix { text += " with keys starting \(keyPrefix.debugDescription)" }
        return text
    }

    private func document(matched: Int, deleted: Int, samples: [DedupRecord], now: Int64, error: (DedupError, ExitStatus)?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("dry_run", .bool(!yes)),
            ("namespace", .string(namespace)),
            ("from", from.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("from_ms", from.map { .int($0.milliseconds) } ?? .null),
            ("until", until.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("until_ms", until.map { .int($0.milliseconds) } ?? .null),
            ("key_prefix", .string(keyPrefix)),
            ("matched", .int(Int64(matched))),
            ("deleted", .int(Int64(deleted))),
            ("sample", .array(samples.map { RecordRendering.json($0, now: now, includeResult: false) })),
        ]
        if let (error, status) = error { members.append(("error", Session.errorObject(error, status: status))) }
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
            how many are expired where the store can count them, and changes nothing. With --yes, \
            deletes them in batches and reports how many were removed.
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
                if deleted > 0 { StandardError.write("dedup-inspect: deleted \(deleted) expired records before the error\n") }
                if session.json { session.document(document(expired: expired, deleted: deleted, error: (error, status))) }
            }
            if yes {
                let progress = ProgressLine(mode: global.progress, verb: "purged")
                defer { progress.finish() }
                while true {
                    let count = try await store.purgeExpired(limit: batchSize)
                    deleted += count
                    progress.update(deleted)
                    if count < batchSize { break }
                }
            } else {
                expired = try await StoreAccess.countExpired(in: store, at: session.location, now: session.now)
            }
            session.onError = nil
            if session.json {
                session.document(document(expired: expired, deleted: deleted, error: nil))
            } else if yes {
                session.out.line("purged \(grouped(deleted)) expired records")
            } else if let expired {
                session.out.line("dry run: would delete \(grouped(expired)) expired records; run again with --yes to delete them")
            } else {
                session.out.line("dry run: this store cannot count expired records without deleting them; run again with --yes to purge")
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
