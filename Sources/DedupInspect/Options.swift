import ArgumentParser
import Dedup
import DedupStoreLocator
import Foundation

/// Text for people or JSON for scripts.
public enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Aligned tables and labelled fields.
    case text
    /// One JSON document per command, with stable keys.
    case json
}

/// A time given on the command line: ISO 8601 with a zone, or Unix time with a unit (see
/// ``Timestamp/parse(_:)``).
public struct TimeArgument: ExpressibleByArgument, Sendable, Hashable {
    /// Milliseconds since the Unix epoch.
    public var milliseconds: Int64

    /// The time as a date.
    public var date: Date { Date(millisecondsSince1970: milliseconds) }

    /// Parses ``Timestamp/parse(_:)``'s spellings; `nil` for anything else.
    public init?(argument: String) {
        guard let milliseconds = try? Timestamp.parse(argument) else { return nil }
        self.milliseconds = milliseconds
    }

    /// Parses an option's value, refusing it with ``Timestamp/parse(_:)``'s hint (an option's
    /// `transform`, so that ArgumentParser prints the hint rather than only "invalid").
    static func parsing(_ argument: String) throws -> TimeArgument {
        do {
            return TimeArgument(milliseconds: try Timestamp.parse(argument))
        } catch {
            throw ValidationError(error.message)
        }
    }

    private init(milliseconds: Int64) {
        self.milliseconds = milliseconds
    }

    /// The accepted spellings, for `--help`.
    public static var defaultCompletionKind: CompletionKind { .default }
}

/// The options every subcommand takes.
public struct GlobalOptions: ParsableArguments {
    /// The store's location; falls back to `DEDUP_STORE` so a password need not show in `ps`.
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The store: sqlite:PATH, redis://[user:password@]host:port/db or unix:///path/to/redis.sock (default: $DEDUP_STORE).",
            valueName: "location"
        )
    )
    public var store: String?

    /// Text or JSON.
    @Option(name: .long, help: "Output format: text or json.")
    public var format: OutputFormat = .text

    /// When to draw progress on standard error.
    @Option(name: .long, help: "Progress on stderr for long operations: auto (only on a terminal), always, never.")
    public var progress: ProgressMode = .auto

    /// Creates default options.
    public init() {}

    /// The store's location, from `--store` or `DEDUP_STORE`.
    func location() throws(DedupError) -> StoreLocation {
        guard let text = store ?? ProcessInfo.processInfo.environment["DEDUP_STORE"], !text.isEmpty else {
            throw DedupError(
                .invalidConfiguration,
                "no store given: pass --store sqlite:PATH or --store redis://host:port/db, or set DEDUP_STORE"
            )
        }
        return try StoreLocation(parsing: text)
    }
}

/// A record filter as options (`list`, `reset`).
struct FilterOptions: ParsableArguments {
    @Option(help: "Only this namespace.")
    var namespace: String?

    @Option(help: "Only this state: in_flight or completed.")
    var state: RecordState?

    @Option(
        help: ArgumentHelp(
            "Only records whose time is at or after this: the broker time where the record carries one, else its completion time (claim time while in flight). \(Timestamp.accepted).",
            valueName: "time"
        ),
        transform: TimeArgument.parsing
    )
    var from: TimeArgument?

    @Option(
        help: ArgumentHelp("Only records whose time is before this (same spellings as --from).", valueName: "time"),
        transform: TimeArgument.parsing
    )
    var until: TimeArgument?

    @Option(help: "Only keys starting with this prefix.")
    var keyPrefix: String?

    @Option(
        name: .customLong("part"),
        help: ArgumentHelp(
            "Only business keys whose first parts are these, in order; repeat it for each part (--part batch-order-1 matches every key whose first part is batch-order-1, not batch-order-10).",
            valueName: "part"
        )
    )
    var parts: [String] = []

    func validate() throws {
        if let from, let until, from.milliseconds >= until.milliseconds {
            throw ValidationError(
                "--from (\(Timestamp.format(milliseconds: from.milliseconds))) must be before --until (\(Timestamp.format(milliseconds: until.milliseconds)))"
            )
        }
        if let namespace {
            do { try RecordID.validate(namespace: namespace) } catch {
                throw ValidationError("--namespace: \(error.message)")
            }
        }
        if !parts.isEmpty {
            if keyPrefix != nil { throw ValidationError("give --key-prefix or --part, not both") }
            _ = try businessKey(parts, option: "--part")
        }
    }

    /// The filter; parts select by the encoding of the leading parts, a prefix of exactly the keys
    /// that start with them.
    var filter: RecordFilter {
        RecordFilter(
            namespace: namespace,
            state: state,
            from: from?.date,
            until: until?.date,
            keyPrefix: keyPrefix ?? (parts.isEmpty ? nil : BusinessKey.encode(parts))
        )
    }
}

extension RecordState: ExpressibleByArgument {}
