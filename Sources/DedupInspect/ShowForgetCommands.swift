import ArgumentParser
import Dedup
import Foundation

/// The identity of one record on the command line: the key itself, or a business key's parts.
struct IdentityOptions: ParsableArguments {
    @Option(help: "The record's namespace (consumer group or service).")
    var namespace: String

    @Argument(
        help: "The record's key (message ID or business key, as stored); or give a business key's parts with --part."
    )
    var key: String?

    @Option(
        name: .customLong("part"),
        help: ArgumentHelp(
            "A part of a business key, in order; repeat it for each part (--part batch-order-0 --part 0). The key is encoded as KeyStrategy.businessKey encodes it (BusinessKey.encode).",
            valueName: "part"
        )
    )
    var parts: [String] = []

    func validate() throws {
        _ = try recordID()
    }

    func recordID() throws -> RecordID {
        let key: String
        switch (self.key, parts.isEmpty) {
        case (let given?, true):
            key = given
        case (nil, false):
            key = try businessKey(parts, option: "--part")
        case (.some, false):
            throw ValidationError("give the key or its --part parts, not both")
        case (nil, true):
            throw ValidationError(
                "missing the record's key: give KEY, or a business key's parts with --part (repeated)"
            )
        }
        do {
            return try RecordID(namespace: namespace, key: key)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// The business key of `parts` (``BusinessKey/encode(_:)``); a usage error for an empty part.
func businessKey(_ parts: [String], option: String) throws -> String {
    guard let key = BusinessKey.encode(parts) else {
        throw ValidationError("\(option) must not be empty")
    }
    return key
}

/// `show`: one record, every field.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show one record: state, owner, fencing token, attempts, times, result size.",
        discussion:
            "Exits 1 when there is no such record (or it has expired). JSON carries the stored result in base64."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var identity: IdentityOptions

    func run() async throws {
        let id = try identity.recordID()
        try await Session.run(global, opening: .readOnly) { session, store in
            let record = try await store!.record(for: id)
            let now = session.now
            if session.json {
                session.document(
                    .object([
                        ("found", .bool(record != nil)),
                        ("record", record.map { RecordRendering.json($0, now: now, includeResult: true) } ?? .null),
                    ])
                )
            } else if let record {
                session.out.write(RecordRendering.detail(record, now: now))
            }
            if record == nil {
                StandardError.write("dedup-inspect: no record \(id) in \(session.location)\n")
                return .notFound
            }
            return .success
        }
    }
}

/// `forget`: delete one record, whatever its state, so its next delivery runs the handler.
struct ForgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Delete one record so its next delivery runs the handler again (dry run unless --yes).",
        discussion: """
            Without --yes, shows the record that would be deleted and changes nothing. Exits 1 when \
            there is no such record. With --yes, deletes the record as shown: one claimed again or \
            completed meanwhile is left alone.

            A record in flight whose lease has not passed may still have its handler running: \
            deleting it lets another delivery run the handler at the same time, and the holder's \
            completion then fails with leaseLost. forget warns about such a record and, with --yes, \
            refuses it (exit 2, nothing deleted) unless --even-if-live is given too. Waiting for the \
            lease to pass is the safe way: the next delivery takes the record over by itself.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var identity: IdentityOptions

    @Flag(help: "Really delete.")
    var yes = false

    @Flag(help: "With --yes, delete the record even while its lease is live (its handler may still be running).")
    var evenIfLive = false

    func run() async throws {
        let id = try identity.recordID()
        try await Session.run(global) { session, store in
            let store = store!
            let now = session.now
            let record = try await store.record(for: id)
            let liveLeaseLeft = record.flatMap { $0.state == .inFlight ? $0.leaseUntil : nil }
                .map { $0.millisecondsSince1970 - now }.flatMap { $0 > 0 ? $0 : nil }
            if let record, let liveLeaseLeft {
                StandardError.write(
                    "dedup-inspect: warning: the lease of owner \(record.ownerToken ?? "-") is live for another \(humanDuration(milliseconds: liveLeaseLeft)): "
                        + "its handler may still be running, and deleting the record lets another delivery run it at the same time; "
                        + "wait until the lease has passed (the next delivery then takes the record over), or add --even-if-live\n"
                )
            }
            let refused = yes && liveLeaseLeft != nil && !evenIfLive
            var deleted = 0
            if yes, !refused, let record {
                // Only the record as shown: claimed again or completed meanwhile, its state or time differs.
                let time = record.recordTime.millisecondsSince1970
                let asShown = RecordFilter(
                    state: record.state,
                    from: Date(millisecondsSince1970: time),
                    until: Date(millisecondsSince1970: time + 1)
                )
                deleted = try await store.delete([id], matching: asShown)
            }
            let refusal =
                "refusing to delete record \(id) while its lease is live: add --even-if-live to delete it anyway"
            if session.json {
                var members: [(String, JSONValue)] = [
                    ("dry_run", .bool(!yes)),
                    ("matched", .int(Int64(record == nil ? 0 : 1))),
                    ("deleted", .int(Int64(deleted))),
                    ("live_lease", .bool(liveLeaseLeft != nil)),
                    ("record", record.map { RecordRendering.json($0, now: now, includeResult: false) } ?? .null),
                ]
                if refused {
                    members.append(
                        ("error", Session.errorObject(code: "confirmationRequired", message: refusal, status: .usage))
                    )
                }
                session.document(.object(members))
            } else if let record {
                session.out.write(RecordRendering.detail(record, now: now))
                session.out.line("")
                if refused {
                    session.out.line(
                        "nothing deleted: the lease is live; run again with --yes --even-if-live to delete it anyway"
                    )
                } else if yes {
                    session.out.line(
                        deleted == 1 ? "deleted 1 record" : "deleted 0 records (it changed or was already gone)"
                    )
                } else if liveLeaseLeft != nil {
                    session.out.line(
                        "dry run: would delete 1 record, but its lease is live: --yes needs --even-if-live too"
                    )
                } else {
                    session.out.line("dry run: would delete 1 record; run again with --yes to delete it")
                }
            }
            if record == nil {
                StandardError.write("dedup-inspect: no record \(id) in \(session.location)\n")
                return .notFound
            }
            if refused {
                StandardError.write("dedup-inspect: \(refusal)\n")
                return .usage
            }
            return .success
        }
    }
}
