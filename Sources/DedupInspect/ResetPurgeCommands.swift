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
            valueName: "time"
        ),
        transform: TimeArgument.parsing
    )
    var from: TimeArgument?

    @Option(
        help: ArgumentHelp(
            "Reset records published (or completed, as for --from) before this (same spellings as --from).",
            valueName: "time"
        ),
        transform: TimeArgument.parsing
    )
    var until: TimeArgument?

    @Flag(help: "Reset the whole namespace, whatever the broker or completion time.")
    var allTime = false

    @Flag(help: "Really delete.")
    var yes = false

    @OptionGroup var guardOptions: ResetGuardOptions

    func validate() throws {
        try RecordReset.validate(namespace: namespace, from: from, until: until)
        if from == nil && until == nil && !allTime {
            throw ValidationError(
                "give the time range to reset with --from and/or --until, or --all-time for the whole namespace"
            )
        }
        if allTime && (from != nil || until != nil) {
            throw ValidationError("--all-time cannot be combined with --from or --until")
        }
    }

    private var reset: RecordReset {
        RecordReset(
            namespace: namespace,
            from: from,
            until: until,
            allTime: allTime,
            options: guardOptions,
            progress: global.progress
        )
    }

    func run() async throws {
        try await Session.run(global) { session, store in
            let store = store!
            let reset = self.reset
            let now = session.now
            var tally = RecordReset.Tally()
            session.onError = { error, status in
                if tally.deleted > 0 {
                    StandardError.write("dedup-inspect: deleted \(counted(tally.deleted, "record")) before the error\n")
                }
                if session.json {
                    session.document(document(tally, now: now, error: Session.errorObject(error, status: status)))
                }
            }
            try await reset.survey(in: store, skippingIfConfirmed: yes, into: &tally)
            if yes, reset.exceedsMaxShare(tally) {
                let message = reset.refusal(tally)
                StandardError.write("dedup-inspect: \(message)\n")
                session.onError = nil
                if session.json {
                    session.document(
                        document(
                            tally,
                            now: now,
                            error: Session.errorObject(code: "confirmationRequired", message: message, status: .usage)
                        )
                    )
                }
                return .usage
            }
            if yes { try await reset.delete(in: store, into: &tally) }
            session.onError = nil

            if session.json {
                session.document(document(tally, now: now, error: nil))
            } else if tally.matched == 0 {
                session.out.line("no completed records of namespace \(displayed(namespace)) \(reset.rangeDescription)")
            } else if yes {
                reset.reportDeleted(tally, to: session.out)
            } else {
                reset.reportDryRun(tally, to: session.out)
                session.out.line("run again with --yes to delete them")
            }
            if tally.matched == 0 {
                StandardError.write("dedup-inspect: \(reset.nothingMatched)\n")
                return .notFound
            }
            return .success
        }
    }

    private func document(_ tally: RecordReset.Tally, now: Int64, error: JSONValue?) -> JSONValue {
        var members = reset.documentMembers(tally, yes: yes, now: now)
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
                if deleted > 0 {
                    StandardError.write(
                        "dedup-inspect: deleted \(counted(deleted, "expired record")) before the error\n"
                    )
                }
                if session.json {
                    session.document(document(expired: expired, deleted: deleted, error: (error, status)))
                }
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
                session.out.line(
                    "dry run: would delete \(counted(found, "expired record")); run again with --yes to delete them"
                )
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
