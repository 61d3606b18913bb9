import ArgumentParser
import Dedup
import Foundation

/// The identity of one record on the command line: the key itself, or a business key's parts.
struct IdentityOptions: ParsableArguments {
    @Option(help: "The record's namespace (consumer group or service).")
    var namespace: String

    @Argument(help: "The record's key (message ID or business key, as stored); or give a business key's parts with --part.")
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
            throw ValidationError("missing the record's key: give KEY, or a business key's parts with --part (repeated)")
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
        discussion: "Exits 1 when there is no such record (or it has expired). JSON carries the stored result in base64."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var identity: IdentityOptions

    func run() async throws {
        let id = try identity.recordID()
        try await Session.run(global) { session, store in
            let record = try await store!.record(for: id)
            let now = session.now
            if session.json {
                session.document(.object([
                    ("found", .bool(record != nil)),
                    ("record", record.map { RecordRendering.json($0, now: now, includeResult: true) } ?? .null),
                ]))
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
            Without --yes, shows the record that would be deleted and changes nothing. Deleting an \
            in-flight record lets another consumer claim the key while the current holder may still be \
            running: its completion then fails with leaseLost. Exits 1 when there is no such record.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var identity: IdentityOptions

    @Flag(help: "Really delete.")
    var yes = false

    func run() async throws {
        let id = try identity.recordID()
        try await Session.run(global) { session, store in
            let store = store!
            let now = session.now
            let record = try await store.record(for: id)
            var deleted = 0
            if yes, record != nil {
                deleted = try await store.delete([id], matching: RecordFilter())
            }
            if session.json {
                session.document(.object([
                    ("dry_run", .bool(!yes)),
                    ("matched", .int(Int64(record == nil ? 0 : 1))),
                    ("deleted", .int(Int64(deleted))),
                    ("record", record.map { RecordRendering.json($0, now: now, includeResult: false) } ?? .null),
                ]))
            } else if let record {
                session.out.write(RecordRendering.detail(record, now: now))
                session.out.line("")
                if yes {
                    session.out.line(deleted == 1 ? "deleted 1 record" : "deleted 0 records (it was already gone)")
                } else {
                    session.out.line("dry run: would delete 1 record; run again with --yes to delete it")
                }
            }
            if record == nil {
                StandardError.write("dedup-inspect: no record \(id) in \(session.location)\n")
                return .notFound
            }
            return .success
        }
    }
}
