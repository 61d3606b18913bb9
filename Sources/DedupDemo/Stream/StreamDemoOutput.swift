import ArgumentParser
import Dedup
import DedupStoreLocator
import Foundation

extension DemoCommand {
    /// Runs the demo on a real Redis stream and prints its ledger and verdict.
    func runOnStream(_ broker: StreamBrokerLocation) async throws {
        var options = StreamDemoOptions(broker: broker, store: try StoreLocation(parsing: store))
        options.messages = messages ?? 1_000
        options.duplicateRate = duplicateRate
        options.poisonMessages = poisonMessages
        options.consumers = consumers
        options.killsPerPass = kills
        options.timeLimit = .seconds(timeLimit)
        options.seed = seed
        options.verbose = verbose
        print(
            "dedup-demo: \(options.messages) messages, \(Int(duplicateRate * 100))% published twice, \(poisonMessages) poison, "
                + "\(consumers) consumer processes, \(kills) SIGKILLs per pass, stream \(broker), store \(options.store)"
        )
        let started = ContinuousClock.now
        let report: StreamDemoReport
        do {
            report = try await StreamDemoScenario.run(options) { line in print("  … \(line)") }
        } catch let error as DedupError {
            FileHandle.standardError.write(Data("dedup-demo: \(options.store.redactingSecrets(in: "\(error)"))\n".utf8))
            throw ExitCode(3)
        } catch let failure as StreamDemoScenario.Failure {
            FileHandle.standardError.write(
                Data("dedup-demo: \(options.store.redactingSecrets(in: failure.description))\n".utf8)
            )
            throw ExitCode(1)
        }
        let elapsed = ContinuousClock.now - started
        let range = "[\(DemoScenario.isoString(report.replayFrom)), \(DemoScenario.isoString(report.replayUntil)))"
        let rows: [(String, String)] = [
            (
                "published",
                "\(report.messages) messages (\(report.poisonMessages) poison) in \(report.entries) entries "
                    + "(\(report.producerRetries) producer retries)"
            ),
            (
                "consumer processes",
                "\(report.processesStarted) started, \(report.kills) killed with SIGKILL holding unacked entries"
            ),
            ("applied (first pass)", "\(report.appliedFirstPass)"),
            (
                "dead-letter stream",
                "\(report.deadLetterEntries) entries in \(options.broker.deadLetterStream) for \(report.poisonMessages) poison messages"
                    + (report.deadLettersHold ? " (each exactly once)" : " (expected each exactly once)")
            ),
            (
                "replay",
                "\(range): \(report.replay.resetRecords) records reset, group moved to \(report.replay.groupPosition), "
                    + "\(report.reappliedByReplay) messages applied again of \(report.messagesInReplayRange) published in the range"
            ),
            (
                "re-applied in the at-least-once window",
                "\(report.extraApplications) extra applications of \(report.reappliedMessages) messages"
                    + (report.isTransactional ? " (transactional mode: the effect commits with the completion)" : "")
            ),
            (
                "violations",
                "\(report.violations.count) (messages applied other than promised beyond what kills after the effect explain)"
            ),
            ("time", "\(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow)))"),
        ]
        Self.printSummary(rows: rows, violations: report.violations, data: report.data)
        let verdict = Self.verdict(report)
        print(verdict)
        if !verdict.contains(": yes") { throw ExitCode(1) }
    }

    /// The last line of the stream demo: the ledger's verdict, unless the dead letters or the
    /// replay went wrong.
    static func verdict(_ report: StreamDemoReport) -> String {
        guard report.deadLettersHold else {
            return
                "exactly once: no (the dead-letter stream holds \(report.deadLetterEntries) entries for \(report.poisonMessages) poison messages)"
        }
        guard report.replayHolds else {
            return
                "exactly once: no (the replay reset \(report.replay.resetRecords) records and applied \(report.reappliedByReplay) messages again, "
                + "for \(report.messagesInReplayRange) published in its range)"
        }
        return verdict(
            violations: report.violations.count,
            reappliedMessages: report.reappliedMessages,
            extraApplications: report.extraApplications
        )
    }
}
