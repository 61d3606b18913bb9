import ArgumentParser
import DedupRedis
import Foundation

/// Runs an executable's command line so that nothing printed about its arguments carries a store's
/// password. ArgumentParser echoes arguments in its usage errors ("Unexpected argument
/// 'redis://user:pw@host'" when an operator forgets `--store`), so its messages are scrubbed of the
/// secrets of every argument that names a store before they are printed.
public enum RedactedCommandLine {
    /// Parses `arguments` as `command`'s, runs it, and returns the process's exit code: 0, the code
    /// the command threw as `ExitCode`, 2 for a usage error (ArgumentParser's own would be 64).
    ///
    /// - Parameter usageError: Called with a usage error's message (scrubbed, without the usage
    ///   lines) after the full message went to standard error: a tool whose scripts read JSON prints
    ///   its error document here.
    public static func run(
        _ command: any ParsableCommand.Type,
        arguments: [String],
        usageError: (String) -> Void = { _ in }
    ) async -> Int32 {
        do {
            var parsed = try command.parseAsRoot(arguments)
            if var asyncCommand = parsed as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try parsed.run()
            }
            return 0
        } catch let exit as ExitCode {
            // Commands throw ExitCode after reporting for themselves.
            return exit.rawValue
        } catch {
            let code = command.exitCode(for: error)
            let message = redactingSecrets(of: arguments, in: command.fullMessage(for: error))
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            guard code == .validationFailure else { return code.rawValue }
            usageError(redactingSecrets(of: arguments, in: command.message(for: error)))
            return usageExitCode
        }
    }

    /// The exit code of a usage error.
    public static let usageExitCode: Int32 = 2

    /// `text` without the secrets of the arguments that name a store or stream: `--store`'s and
    /// `--stream`'s value (`--store URL`, `--store=URL`), any argument that looks like a store URL (a URL given without
    /// `--store`), and `$DEDUP_STORE`. Each secret goes as written and percent-decoded.
    public static func redactingSecrets(of arguments: [String], in text: String) -> String {
        var secrets: [String] = []
        var previous: String?
        for argument in arguments {
            var candidates = [argument]
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                candidates.append(String(argument[argument.index(after: equals)...]))
            }
            for candidate in candidates where previous == "--store" || previous == "--stream" || namesStore(candidate) {
                secrets += URLCredentials.secrets(in: candidate)
            }
            previous = argument
        }
        if let environment = ProcessInfo.processInfo.environment["DEDUP_STORE"] {
            secrets += URLCredentials.secrets(in: environment)
        }
        return URLCredentials.removing(secrets, from: text)
    }

    /// Whether an argument looks like a store URL, well formed or not (`redis:/host`).
    private static func namesStore(_ argument: String) -> Bool {
        let lowered = argument.lowercased()
        return argument.contains("://") || ["redis:", "rediss:", "unix:"].contains { lowered.hasPrefix($0) }
    }
}
