import ArgumentParser
import Dedup
import DedupStoreLocator
import Foundation

/// `dedup-inspect`: the operator's tool for a swift-dedup store (SQLite or Redis): what it holds,
/// how far back it covers, and resetting a time range before an intentional replay.
public struct DedupInspectCommand: AsyncParsableCommand {
    /// The command's help, subcommands and exit codes.
    public static let configuration = CommandConfiguration(
        commandName: "dedup-inspect",
        abstract: "Inspect and maintain a swift-dedup store (SQLite or Redis).",
        discussion: """
            Every subcommand takes --store (sqlite:PATH, redis://[user:password@]host:port/db or \
            unix:///path/to/redis.sock; default $DEDUP_STORE, which keeps a password out of the process \
            list) and --format text|json. Passwords are never printed.

            Times are printed in UTC, ISO 8601 with milliseconds (2024-05-01T12:00:00.000Z), and \
            accepted as ISO 8601 with a zone (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or as \
            Unix time with a unit (1714564800s, 1714564800000ms). A time without a zone is refused \
            (UTC or local?), and so is a bare number that may be seconds; a bare number from 10^11 to \
            10^14 can only be milliseconds and is read as such. A record's time is its completion \
            time, or its claim time while in flight.

            forget, reset, replay and purge change nothing without --yes: they show what they would \
            delete. reset and replay --yes over more than --max-share of a namespace need \
            --all-matching, replay --yes that would move a group forward needs --even-if-ahead, and \
            forget --yes of a record whose lease is live needs --even-if-live. replay's --stream \
            URL hides its password as --store's does.

            With --format json, an error is a document too: {"error":{"code":C,"message":M, \
            "exit_code":N}}, alone or as the "error" member of the command's document. C is a store \
            error's name (storeUnavailable, authenticationFailed, ...), "usage" for arguments that \
            could not be parsed, or "confirmationRequired" for a deletion that needs one more flag, "notFound" for a replay's \
            missing stream, group or records.

            \(ExitStatus.helpText)
            """,
        subcommands: [
            StatsCommand.self, ListCommand.self, ShowCommand.self, ForgetCommand.self, ResetCommand.self,
            ReplayCommand.self, PurgeCommand.self, MigrateCommand.self, CheckCommand.self,
        ]
    )

    /// Creates the command (ArgumentParser's requirement).
    public init() {}

    /// Parses `arguments`, runs the subcommand and returns the process exit code: the codes of
    /// ``ExitStatus``, with ArgumentParser's usage errors (its EX_USAGE, 64) reported as 2. No
    /// message carries a password given in the arguments; under `--format json` a usage error is
    /// also printed as `{"error":{"code":"usage","message":…,"exit_code":2}}` on standard output.
    public static func run(arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Int32 {
        await RedactedCommandLine.run(self, arguments: arguments) { message in
            guard asksForJSON(arguments) else { return }
            let sink = OutputSink()
            sink.line(Session.errorDocument(code: "usage", message: message, status: .usage).rendered)
            sink.flush()
        }
    }

    /// Whether the arguments ask for `--format json` (read from the raw arguments: a usage error
    /// means they could not be parsed).
    static func asksForJSON(_ arguments: [String]) -> Bool {
        zip(arguments, arguments.dropFirst()).contains { $0 == "--format" && $1 == "json" }
            || arguments.contains("--format=json")
    }
}
