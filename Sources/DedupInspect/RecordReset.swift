import ArgumentParser
import Dedup
import Foundation

/// The options of a deletion of completed records in a time range that `reset` and `replay` share:
/// which keys, the share guard, and paging.
struct ResetGuardOptions: ParsableArguments {
    @Option(help: "Only keys starting with this prefix.")
    var keyPrefix: String?

    @Option(
        help: ArgumentHelp(
            "With --yes, refuse to delete more than this percentage of the namespace's records without --all-matching.",
            valueName: "percent"
        )
    )
    var maxShare = 50

    @Flag(help: "Confirm a reset that takes more than --max-share of the namespace.")
    var allMatching = false

    @Option(help: "In a dry run, show this many of the matching records.")
    var sample = 10

    @Option(help: "Records fetched and deleted per round trip.")
    var batchSize = 1000

    func validate() throws {
        if !(0...100).contains(maxShare) { throw ValidationError("--max-share must be a percentage from 0 to 100") }
        if sample < 0 { throw ValidationError("--sample must be 0 or more") }
        if batchSize < 1 || batchSize > 100_000 { throw ValidationError("--batch-size must be between 1 and 100000") }
    }
}

/// Counting and deleting the completed records of one namespace in a time range (broker time where
/// a record has one, as ``RecordFilter`` selects), page by page so memory stays flat, with the share
/// guard that catches a range typed in the wrong unit. `reset` is this alone; `replay` moves a
/// consumer group after it.
struct RecordReset {
    let namespace: String
    let from: TimeArgument?
    let until: TimeArgument?
    /// The whole namespace, whatever the time (`reset --all-time`): needs no share guard.
    let allTime: Bool
    let options: ResetGuardOptions
    let progress: ProgressMode

    /// What a reset found and did, for both formats.
    struct Tally {
        var matched = 0
        var deleted = 0
        var samples: [DedupRecord] = []
        /// The namespace's live records (in flight and completed), when counted.
        var namespaceRecords: Int?
    }

    var filter: RecordFilter {
        RecordFilter(
            namespace: namespace,
            state: .completed,
            from: from?.date,
            until: until?.date,
            keyPrefix: options.keyPrefix
        )
    }

    /// Validates the namespace and the range.
    static func validate(namespace: String, from: TimeArgument?, until: TimeArgument?) throws {
        do { try RecordID.validate(namespace: namespace) } catch {
            throw ValidationError("--namespace: \(error.message)")
        }
        if let from, let until, from.milliseconds >= until.milliseconds {
            throw ValidationError(
                "--from (\(Timestamp.format(milliseconds: from.milliseconds))) must be before --until (\(Timestamp.format(milliseconds: until.milliseconds)))"
            )
        }
    }

    /// Counts what would be deleted and the namespace's records; with `skippingIfConfirmed`, not
    /// when a confirmation flag makes the count needless (deleting counts then).
    func survey(in store: any DedupStore, skippingIfConfirmed: Bool, into tally: inout Tally) async throws {
        guard !skippingIfConfirmed || !(allTime || options.allMatching) else { return }
        tally.namespaceRecords =
            try await store.stats().namespaces.first { $0.namespace == namespace }.map { $0.inFlight + $0.completed }
            ?? 0
        try await count(in: store, into: &tally)
    }

    /// Counts the matching records (a dry run, or the check before deleting), keeping the samples.
    private func count(in store: any DedupStore, into tally: inout Tally) async throws {
        let progress = ProgressLine(mode: progress, verb: "counted")
        defer { progress.finish() }
        var cursor: PageCursor?
        repeat {
            let page = try await store.records(matching: filter, after: cursor, limit: options.batchSize)
            cursor = page.next
            tally.matched += page.records.count
            if tally.samples.count < options.sample {
                tally.samples += page.records.prefix(options.sample - tally.samples.count)
            }
            progress.update(tally.matched)
        } while cursor != nil
    }

    /// Deletes the matching records page by page, each only if it still matches.
    func delete(in store: any DedupStore, into tally: inout Tally) async throws {
        let progress = ProgressLine(mode: progress, verb: "deleted")
        defer { progress.finish() }
        // The samples show a refused or dry run; deleted records are counted, not listed.
        tally.samples = []
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
                let page = try await store.records(matching: filter, after: cursor, limit: options.batchSize)
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
    func exceedsMaxShare(_ tally: Tally) -> Bool {
        guard let total = tally.namespaceRecords, !allTime, !options.allMatching else { return false }
        return tally.matched * 100 > options.maxShare * total
    }

    /// `N of the namespace's M records (P%)`.
    func share(_ tally: Tally) -> String? {
        guard let total = tally.namespaceRecords else { return nil }
        return
            "\(grouped(tally.matched)) of the namespace's \(counted(total, "record")) (\(percentage(tally.matched, of: total)))"
    }

    /// Why a --yes over more than --max-share is refused.
    func refusal(_ tally: Tally) -> String {
        "refusing to delete \(counted(tally.matched, "completed record")) of namespace \(displayed(namespace)) \(rangeDescription): "
            + "that is \(share(tally) ?? ""), more than --max-share \(options.maxShare)%. Check the range (a Unix time in seconds "
            + "is written 1714564800s); to delete them all, run again with --all-matching"
    }

    /// What nothing matching means, on stderr.
    var nothingMatched: String {
        "nothing matched: no completed records of namespace \(displayed(namespace)) \(rangeDescription)"
    }

    /// A dry run's sample table, `... and N more`, what would be deleted and its share.
    func reportDryRun(_ tally: Tally, to out: OutputSink) {
        var table = TextTable(RecordRendering.listHeaders, rightAligned: RecordRendering.listRightAligned)
        for record in tally.samples { table.append(RecordRendering.listRow(record)) }
        if !tally.samples.isEmpty { out.write(table.render()) }
        if tally.samples.count < tally.matched {
            out.line("... and \(grouped(tally.matched - tally.samples.count)) more")
        }
        out.line("")
        out.line(
            "dry run: would delete \(counted(tally.matched, "completed record")) of namespace \(displayed(namespace)) \(rangeDescription)"
        )
        if let share = share(tally) {
            let over = tally.matched * 100 > options.maxShare * (tally.namespaceRecords ?? 0) && !allTime
            out.line(
                "that is \(share)"
                    + (over ? ", more than --max-share \(options.maxShare)%: --yes needs --all-matching too" : "")
            )
        }
    }

    /// `deleted N completed records of namespace NS published in …`, and what was left alone.
    func reportDeleted(_ tally: Tally, to out: OutputSink) {
        out.line(
            "deleted \(counted(tally.deleted, "completed record")) of namespace \(displayed(namespace)) \(rangeDescription)"
        )
        if tally.deleted < tally.matched {
            out.line(
                "(\(grouped(tally.matched - tally.deleted)) matched but changed or vanished before deletion and were left alone)"
            )
        }
    }

    var rangeDescription: String {
        var text: String
        switch (from, until) {
        case let (from?, until?):
            text =
                "published in [\(Timestamp.format(milliseconds: from.milliseconds)), \(Timestamp.format(milliseconds: until.milliseconds)))"
        case let (from?, nil): text = "published at or after \(Timestamp.format(milliseconds: from.milliseconds))"
        case let (nil, until?): text = "published before \(Timestamp.format(milliseconds: until.milliseconds))"
        case (nil, nil): text = "(all time)"
        }
        // Says which time selects, as the filter does (RecordFilter: broker time where present).
        if from != nil || until != nil { text += " (by broker time; by completion time for records without one)" }
        if let keyPrefix = options.keyPrefix { text += " with keys starting \(keyPrefix.debugDescription)" }
        return text
    }

    /// The JSON members both commands' documents start with.
    func documentMembers(_ tally: Tally, yes: Bool, now: Int64) -> [(String, JSONValue)] {
        [
            ("dry_run", .bool(!yes)),
            ("namespace", .string(namespace)),
            ("from", from.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("from_ms", from.map { .int($0.milliseconds) } ?? .null),
            ("until", until.map { .string(Timestamp.format(milliseconds: $0.milliseconds)) } ?? .null),
            ("until_ms", until.map { .int($0.milliseconds) } ?? .null),
            ("key_prefix", .string(options.keyPrefix)),
            ("matched", .int(Int64(tally.matched))),
            ("deleted", .int(Int64(tally.deleted))),
            ("namespace_records", .int(tally.namespaceRecords)),
            ("max_share_percent", .int(Int64(options.maxShare))),
            ("sample", .array(tally.samples.map { RecordRendering.json($0, now: now, includeResult: false) })),
        ]
    }
}
