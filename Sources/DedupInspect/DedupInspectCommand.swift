import ArgumentParser
import Dedup
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
            accepted as ISO 8601 (2024-05-01, 2024-05-01T14:00:00+02:00, ...) or Unix milliseconds. \
            A record's time is its completion time, or its claim time while in flight.

            forget, reset and purge change nothing without --yes: they show what they would delete.

            \(ExitStatus.helpText)
            """,
        subcommands: [
            StatsCommand.self, ListCommand.self, ShowCommand.self, ForgetCommand.self, ResetCommand.self,
            PurgeCommand.self, MigrateCommand.self, CheckCommand.self,
        ]
    )

    /// Creates the command (ArgumentParser's requirement).
    public init() {}

    /// Parses `arguments`, runs the subcommand and returns the process exit code: the codes of
    /// ``ExitStatus``, with ArgumentParser's usage errors (its EX_USAGE, 64) reported as 2.
    public static func run(arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return ExitStatus.success.rawValue
        } catch let exit as ExitCode {
            // Our own commands throw ExitCode after reporting; ArgumentParser's help throws .success.
            return exit.rawValue
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            if !message.isEmpty { StandardError.write(message + "\n") }
            return code == .validationFailure ? ExitStatus.usage.rawValue : code.rawValue
        }
    }
}
