import ArgumentParser
import Dedup
import DedupRedis
import DedupRedisStreams
import Foundation

/// `replay`: a coordinated replay of a broker time range through a Redis Streams consumer group:
/// reset the dedup records of [--from, --until), then move the group back to just before --from,
/// so the entries of the range are applied again and later ones are skipped as duplicates.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract:
            "Replay a broker time range through a Redis stream's consumer group: reset its records, move the group back (dry run unless --yes).",
        discussion: """
            Resets the COMPLETED records of --namespace whose broker time is in [--from, --until) \
            (to now without --until), as reset does, then moves --group of --stream to just before \
            --from (XGROUP SETID to the greatest ID below <from>-0, so the entry at --from itself is \
            delivered again; SETID to <from>-0 would skip it). The group's consumers then receive \
            every entry from --from on again: those in the range are applied again, later ones are \
            skipped as duplicates and acknowledged. It works whether the store is SQLite or Redis.

            Without --yes, shows the records it would reset, the group's position and the one it \
            would move to, its pending entries (delivered, not acknowledged: they are delivered \
            again besides) and lag, and warns when the stream's first entry is after --from (older \
            entries were trimmed and cannot come again); changes nothing.

            With --yes, deletes the records first and moves the group second: a run stopped between \
            the two has moved nothing, so consumers go on as before and running the same command \
            again finishes the replay. (In the other order consumers could read the range again \
            before its records were deleted and skip it as duplicates.) Consumers may keep running; \
            for an exact replay, check in the dry run that no entry of the range is pending, since a \
            message handled while its record is deleted completes afterwards and is not applied \
            again. Consumers with a local cache honour the reset once their cache entries expire.

            Refused, with nothing changed: a stream or group that does not exist (exit 1), nothing \
            matched (exit 1), a --from after the group's position (moving a group forward skips \
            entries, which is no replay: exit 2 unless --even-if-ahead), more than --max-share of \
            the namespace (exit 2 unless --all-matching).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "The namespace whose records the consumers of the group write.")
    var namespace: String

    @Option(
        help: ArgumentHelp(
            "The stream: redis://[user:password@]host[:port]/KEY[?db=N] or unix:///path/to/redis.sock?key=KEY[&db=N] (the key percent-encoded).",
            valueName: "location"
        )
    )
    var stream: String

    @Option(help: "The consumer group to move back.")
    var group: String

    @Option(
        help: ArgumentHelp(
            "Replay the entries published (broker time) at or after this: \(Timestamp.accepted).",
            valueName: "time"
        ),
        transform: TimeArgument.parsing
    )
    var from: TimeArgument

    @Option(
        help: ArgumentHelp(
            "Re-apply only entries published before this (same spellings as --from); default: now.",
            valueName: "time"
        ),
        transform: TimeArgument.parsing
    )
    var until: TimeArgument?

    @Flag(help: "Really delete the records and move the group.")
    var yes = false

    @Flag(help: "Move the group even when --from is after its position (entries between are never delivered).")
    var evenIfAhead = false

    @OptionGroup var guardOptions: ResetGuardOptions

    func validate() throws {
        try RecordReset.validate(namespace: namespace, from: from, until: until)
        if from.milliseconds < 0 { throw ValidationError("--from must not be before 1970") }
        if group.isEmpty { throw ValidationError("--group must not be empty") }
        do { _ = try RedisStreamLocation(url: stream) } catch { throw ValidationError("--stream: \(error.message)") }
    }

    /// What the group and stream looked like, and what was done to them.
    private struct StreamState {
        var group: RedisStreamGroupInfo
        var firstEntry: StreamEntryID?
        var target: StreamEntryID
        var moved = false
        var warnings: [String] = []

        var isAhead: Bool { target > group.lastDeliveredID }
    }

    func run() async throws {
        try await Session.run(global) { session, store in
            let store = store!
            let location = try RedisStreamLocation(url: stream)
            session.otherSecrets = URLCredentials.secrets(in: stream)
            let admin = RedisStreamAdmin(location: location)
            do {
                let status = try await replay(session: session, store: store, admin: admin)
                await admin.close()
                return status
            } catch {
                await admin.close()
                throw error
            }
        }
    }

    private var reset: RecordReset {
        RecordReset(
            namespace: namespace,
            from: from,
            until: until,
            allTime: false,
            options: guardOptions,
            progress: global.progress
        )
    }

    private func replay(session: Session, store: any DedupStore, admin: RedisStreamAdmin) async throws -> ExitStatus {
        let reset = self.reset
        let now = session.now
        let streamName = admin.location.description
        var tally = RecordReset.Tally()
        var state: StreamState?
        session.onError = { error, status in
            if tally.deleted > 0 {
                StandardError.write(
                    "dedup-inspect: deleted \(counted(tally.deleted, "record")) before the error; the group was not moved: run the same command again to finish the replay\n"
                )
            }
            if session.json {
                session.document(
                    document(
                        tally,
                        state,
                        stream: streamName,
                        now: now,
                        error: Session.errorObject(error, status: status)
                    )
                )
            }
        }

        // The stream first: a wrong stream or group must stop the command before any record goes.
        session.target = "stream \(streamName)"
        guard let groups = try await admin.groups() else {
            return refuse(
                "stream \(streamName) does not exist",
                code: "notFound",
                status: .notFound,
                tally,
                state,
                stream: streamName,
                session: session,
                now: now
            )
        }
        guard let group = groups.first(where: { $0.name == self.group }) else {
            let known =
                groups.isEmpty
                ? "it has none" : "its groups: " + groups.map { displayed($0.name) }.joined(separator: ", ")
            return refuse(
                "stream \(streamName) has no consumer group \(displayed(self.group)) (\(known))",
                code: "notFound",
                status: .notFound,
                tally,
                state,
                stream: streamName,
                session: session,
                now: now
            )
        }
        var current = StreamState(
            group: group,
            firstEntry: try await admin.firstEntryID(),
            target: .justBefore(milliseconds: UInt64(from.milliseconds))
        )
        session.target = nil
        current.warnings = warnings(current)
        state = current

        // Counted with --yes too: a replay that matches nothing moves no group.
        try await reset.survey(in: store, skippingIfConfirmed: false, into: &tally)
        if yes, current.isAhead, !evenIfAhead {
            let message =
                "refusing to move group \(displayed(self.group)) forward, from \(current.group.lastDeliveredID) to \(current.target): "
                + "--from is after its position, so the entries between would never be delivered; nothing changed. "
                + "Check --from; to skip them, run again with --even-if-ahead"
            return refuse(
                message,
                code: "confirmationRequired",
                status: .usage,
                tally,
                state,
                stream: streamName,
                session: session,
                now: now
            )
        }
        if yes, reset.exceedsMaxShare(tally) {
            return refuse(
                reset.refusal(tally),
                code: "confirmationRequired",
                status: .usage,
                tally,
                state,
                stream: streamName,
                session: session,
                now: now
            )
        }
        if yes, tally.matched == 0 {
            let message = "\(reset.nothingMatched); the group was not moved (check --namespace)"
            return refuse(
                message,
                code: "notFound",
                status: .notFound,
                tally,
                state,
                stream: streamName,
                session: session,
                now: now
            )
        }
        if yes {
            // Records first, then the group: see the help for why this order.
            try await reset.delete(in: store, into: &tally)
            session.target = "stream \(streamName)"
            guard try await admin.setPosition(of: self.group, to: current.target) else {
                throw DedupError(
                    .storeError,
                    "the group \(displayed(self.group)) or its stream vanished before it could be moved"
                )
            }
            session.target = nil
            current.moved = true
            state = current
        }
        session.onError = nil

        if session.json {
            session.document(document(tally, state, stream: streamName, now: now, error: nil))
        } else {
            report(tally, current, stream: streamName, to: session.out)
        }
        if tally.matched == 0 {
            StandardError.write("dedup-inspect: \(reset.nothingMatched)\n")
            return .notFound
        }
        return .success
    }

    /// The trimmed-history and pending warnings.
    private func warnings(_ state: StreamState) -> [String] {
        var warnings: [String] = []
        let fromText = Timestamp.format(milliseconds: from.milliseconds)
        if let first = state.firstEntry {
            if first.milliseconds > UInt64(from.milliseconds) {
                warnings.append(
                    "the stream's first entry (\(first), \(Timestamp.format(milliseconds: Int64(first.milliseconds)))) is after --from (\(fromText)): "
                        + "entries published before it were trimmed (or never added) and cannot come again"
                )
            }
        } else {
            warnings.append("the stream holds no entries: nothing can come again")
        }
        if state.group.pending > 0 {
            warnings.append(
                "the group has \(counted(Int(state.group.pending), "pending entry", plural: "pending entries")) (delivered, not acknowledged): they are delivered again besides"
            )
        }
        if state.isAhead {
            warnings.append(
                "--from is after the group's position \(state.group.lastDeliveredID): moving it forward skips the entries between; --yes needs --even-if-ahead"
            )
        }
        return warnings
    }

    /// Reports a refusal (nothing changed) on stderr and, for JSON, as the document's error.
    private func refuse(
        _ message: String,
        code: String,
        status: ExitStatus,
        _ tally: RecordReset.Tally,
        _ state: StreamState?,
        stream: String,
        session: Session,
        now: Int64
    ) -> ExitStatus {
        StandardError.write("dedup-inspect: \(message)\n")
        session.onError = nil
        session.target = nil
        if session.json {
            let error = Session.errorObject(code: code, message: message, status: status)
            session.document(document(tally, state, stream: stream, now: now, error: error))
        }
        return status
    }

    private func report(_ tally: RecordReset.Tally, _ state: StreamState, stream: String, to out: OutputSink) {
        if yes {
            reset.reportDeleted(tally, to: out)
            out.line(
                "moved group \(displayed(group)) of \(stream) from \(state.group.lastDeliveredID) to \(state.target):"
            )
            out.line(
                "its consumers receive the entries from \(Timestamp.format(milliseconds: from.milliseconds)) on again; those after the range are skipped as duplicates"
            )
            for warning in state.warnings { out.line("warning: \(warning)") }
            return
        }
        if tally.matched == 0 {
            out.line("no completed records of namespace \(displayed(namespace)) \(reset.rangeDescription)")
        } else {
            reset.reportDryRun(tally, to: out)
        }
        var table = TextTable(["", ""])
        table.append(["stream:", stream])
        table.append(["group:", displayed(group)])
        table.append(["position:", "\(state.group.lastDeliveredID) (the last entry delivered to the group)"])
        table.append(["would move to:", "\(state.target) (just before --from: the entry at --from is delivered again)"])
        table.append(["pending entries:", grouped(Int(state.group.pending))])
        table.append(["lag:", state.group.lag.map { grouped(Int($0)) } ?? "unknown"])
        table.append([
            "first entry:",
            state.firstEntry.map { "\($0) (\(Timestamp.format(milliseconds: Int64($0.milliseconds))))" } ?? "none",
        ])
        out.line("")
        out.write(table.render(header: false))
        for warning in state.warnings { out.line("warning: \(warning)") }
        out.line("run again with --yes to delete the records and move the group")
    }

    private func document(
        _ tally: RecordReset.Tally,
        _ state: StreamState?,
        stream: String,
        now: Int64,
        error: JSONValue?
    ) -> JSONValue {
        var members = reset.documentMembers(tally, yes: yes, now: now)
        members += [
            ("stream", .string(stream)),
            ("group", .string(group)),
            ("position", .string(state?.group.lastDeliveredID.description)),
            ("new_position", .string(state?.target.description)),
            ("moved", .bool(state?.moved ?? false)),
            ("pending", state.map { .int($0.group.pending) } ?? .null),
            ("lag", state?.group.lag.map { .int($0) } ?? .null),
            ("first_entry", .string(state?.firstEntry?.description)),
            ("warnings", .array((state?.warnings ?? []).map { .string($0) })),
        ]
        if let error { members.append(("error", error)) }
        return .object(members)
    }
}
