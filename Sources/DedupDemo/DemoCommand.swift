import ArgumentParser
import Dedup
import DedupRedis
import DedupStoreLocator
import Foundation

/// `dedup-demo`: an at-least-once topic with duplicates, crashes and a replay, consumed through
/// `IdempotentConsumer`; a ledger of side effects shows whether each message was applied once.
public struct DemoCommand: AsyncParsableCommand {
    /// The command's help.
    public static let configuration = CommandConfiguration(
        commandName: "dedup-demo",
        abstract: "Consume a simulated at-least-once topic (or a Redis stream) exactly once.",
        discussion: """
            Publishes messages to a simulated broker that delivers some twice, lets consumers crash \
            mid-handler and redelivers their messages, then replays the whole topic from its start \
            timestamp (like a consumer group's offset reset). Every delivery goes through \
            IdempotentConsumer on the chosen store; a ledger of side effects is counted at the end.

            With SQLite the handler's effect is written in the store's transaction (transactional \
            mode), so even a crash after the effect cannot apply it twice. With Redis a crash after \
            the effect and before the completion re-runs the handler once the lease passes (the \
            documented at-least-once window): the demo counts those messages and checks that every \
            other message was applied exactly once.

            With --broker redis-stream://host:port/KEY it runs on a real Redis stream instead: it \
            publishes to KEY (some messages twice, as a producer's retry does, and a few poison \
            messages whose handler always fails), consumes it with --consumers processes of a \
            consumer group (RedisStreamConsumer), kills some of them with SIGKILL while they hold \
            unacked entries and restarts them, checks that the poison messages reached KEY:dead \
            exactly once, then replays a range of broker time with dedup-inspect replay (which must \
            be beside dedup-demo: the records of the range reset, the group moved back) and checks \
            that exactly that range was applied again.

            At the end it says where its data is and prints the command that removes it.

            Exit status: 0 when every message was applied exactly once (outside the at-least-once \
            window on Redis), 1 when not, 2 for bad arguments, 3 when the store could not be used.
            """
    )

    @Option(help: "Messages to publish (default 10000; 1000 with --broker).")
    var messages: Int?

    @Option(help: "Share of messages delivered twice (0...1); with --broker, published twice.")
    var duplicateRate = 0.15

    @Option(help: "Share of deliveries whose consumer crashes mid-handler (0...1).")
    var crashRate = 0.02

    @Option(help: "Consumers running at once (with --broker, consumer processes).")
    var consumers = 4

    @Option(
        help:
            "The broker: the simulated one by default, or redis-stream://[user:password@]host:port/KEY for a Redis stream."
    )
    var broker: String?

    @Option(help: "With --broker: poison messages, whose handler fails every time.")
    var poisonMessages = 3

    @Option(help: "With --broker: consumer processes killed with SIGKILL in each of the two passes.")
    var kills = 3

    @Option(help: "With --broker: seconds the whole run may take before it fails.")
    var timeLimit = 120

    @Option(help: "The store: sqlite:PATH or redis://[user:password@]host:port/db (the password is never printed).")
    var store = "sqlite:dedup-demo.sqlite"

    @Option(help: "Seed for the broker's duplicates and crashes.")
    var seed: UInt64 = 2026

    @Flag(
        help:
            "Show the library's log lines (leases taken over, migrations); by default only its warnings and errors show."
    )
    var verbose = false

    /// Creates the command (ArgumentParser fills the options).
    public init() {}

    /// Checks the options.
    public func validate() throws {
        guard messages ?? 1 > 0 else { throw ValidationError("--messages must be at least 1") }
        guard poisonMessages >= 0, kills >= 0, timeLimit > 0 else {
            throw ValidationError("--poison-messages and --kills must not be negative, --time-limit must be positive")
        }
        guard (0...1).contains(duplicateRate) else { throw ValidationError("--duplicate-rate must be between 0 and 1") }
        guard (0..<1).contains(crashRate) else { throw ValidationError("--crash-rate must be at least 0 and below 1") }
        guard consumers > 0 else { throw ValidationError("--consumers must be at least 1") }
        do {
            // A malformed Redis URL is a usage error here, not a store failure after the banner.
            if case .redis(let url) = try StoreLocation(parsing: store) { _ = try RedisEndpoint(url: url) }
            if let broker { _ = try StreamBrokerLocation(parsing: broker) }
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// Runs the demo with `arguments` and returns the exit code (usage errors: 2); no message
    /// carries a password given in the arguments.
    public static func run(arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Int32 {
        // The stream demo starts this executable again as its consumer processes.
        if arguments.first == StreamWorkerCommand.configuration.commandName {
            return await RedactedCommandLine.run(StreamWorkerCommand.self, arguments: Array(arguments.dropFirst()))
        }
        return await RedactedCommandLine.run(self, arguments: arguments)
    }

    /// Runs the demo.
    public func run() async throws {
        if let broker { return try await runOnStream(StreamBrokerLocation(parsing: broker)) }
        var options = DemoOptions()
        let messages = self.messages ?? 10_000
        options.messages = messages
        options.duplicateRate = duplicateRate
        options.crashRate = crashRate
        options.consumers = consumers
        options.store = try StoreLocation(parsing: store)
        options.seed = seed
        options.verbose = verbose
        print(
            "dedup-demo: \(messages) messages, \(Int(duplicateRate * 100))% duplicated, \(crashRate * 100)% crashing, "
                + "\(consumers) consumers, store \(options.store)"
        )
        let started = ContinuousClock.now
        let report: DemoReport
        do {
            report = try await DemoScenario.run(options) { line in print("  … \(line)") }
        } catch let error as DedupError {
            FileHandle.standardError.write(Data("dedup-demo: \(options.store.redactingSecrets(in: "\(error)"))\n".utf8))
            throw ExitCode(3)
        }
        let elapsed = ContinuousClock.now - started
        let rows: [(String, String)] = [
            ("published", "\(report.published)"),
            (
                "delivered",
                "\(report.delivered) (duplicates injected \(report.duplicatesInjected), replayed \(report.replayed))"
            ),
            ("applied", "\(report.applied)"),
            ("duplicates skipped", "\(report.duplicatesSkipped)"),
            ("deferred (in flight elsewhere)", "\(report.deferred)"),
            ("consumer crashes", "\(report.crashes)"),
            (
                "crashes after the effect",
                "\(report.crashesAfterEffect)"
                    + (report.isTransactional
                        ? " (rolled back with the completion: transactional mode)"
                        : " (effect written, completion not)")
            ),
            ("takeovers of dead consumers' leases", "\(report.takeovers)"),
            ("applied during the replay", "\(report.appliedDuringReplay)"),
            (
                "re-applied in the at-least-once window",
                "\(report.extraApplications) extra applications of \(report.reappliedMessages) messages"
            ),
            (
                "violations",
                "\(report.violations.count) (messages applied other than once beyond what crashes after the effect explain)"
            ),
            ("time", "\(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow)))"),
        ]
        Self.printSummary(rows: rows, violations: report.violations, data: report.data)
        print(Self.verdict(report))
        if !report.holdsOutsideAtLeastOnceWindow { throw ExitCode(1) }
    }

    /// Prints the summary table, the first violations, and where the data is.
    static func printSummary(
        rows: [(String, String)],
        violations: [(messageID: String, effects: Int)],
        data: DemoDataLocation
    ) {
        let width = rows.map(\.0.count).max() ?? 0
        for (name, value) in rows {
            print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
        }
        for violation in violations.prefix(10) {
            print("  \(violation.messageID): applied \(violation.effects) times")
        }
        print("data: \(data.description)")
        print("remove it: \(data.removalCommand)")
    }

    /// The last line: what held, exactly. `exactly once: yes` only when no message was applied twice.
    static func verdict(_ report: DemoReport) -> String {
        guard report.published > 0 else { return "exactly once: no (nothing was published)" }
        return verdict(
            violations: report.violations.count,
            reappliedMessages: report.reappliedMessages,
            extraApplications: report.extraApplications
        )
    }

    /// The verdict from the messages applied other than promised and those re-applied in the
    /// at-least-once window.
    static func verdict(violations: Int, reappliedMessages: Int, extraApplications: Int) -> String {
        if violations == 0 && extraApplications == 0 { return "exactly once: yes" }
        guard violations == 0 else {
            return
                "exactly once: no (\(violations) messages applied other than once, not explained by a crash after the effect)"
        }
        let reapplied =
            extraApplications == reappliedMessages
            ? "\(reappliedMessages) messages applied twice"
            : "\(reappliedMessages) messages applied more than once (\(extraApplications) extra applications)"
        return
            "exactly once outside the at-least-once window: yes (\(reapplied) after a crash between effect and completion, as documented)"
    }
}
