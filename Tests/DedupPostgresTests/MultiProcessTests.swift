import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Testing

/// Several `dedup-worker` processes on one PostgreSQL database: each key applied exactly once.
@Suite("PostgreSQL shared by several processes")
struct PostgresMultiProcessTests {
    @Test("4 processes claiming the same keys apply each key exactly once", arguments: [1, 25])
    func fourProcesses(batch: Int) async throws {
        let server = try await TestDatabase.shared.server()
        let schema = freshSchema("fleet")
        _ = try await makeStore(schema: schema)
        let keys = 400
        let outcome = try await WorkerFleet.run(
            processes: 4,
            store: server.url + "?schema=\(schema)",
            keys: keys,
            extraArguments: ["--rounds", "2", "--batch", "\(batch)", "--handler-us", "50"]
        )
        #expect(outcome.runsPerKey.count == keys, "every key ran")
        for key in 0..<keys where outcome.runsPerKey[key] != 1 {
            Issue.record("key \(key) ran \(outcome.runsPerKey[key] ?? 0) times")
        }
        #expect(outcome.processesThatApplied > 1, "the processes really raced: \(outcome.summaries)")
    }

    @Test("workers killed with SIGKILL in the middle of transactions, again and again, leave every effect exactly once")
    func killedMidTransaction() async throws {
        let server = try await TestDatabase.shared.server()
        let schema = freshSchema("inbox")
        let store = try await makeStore(schema: schema)
        try await server.psql("CREATE TABLE \"\(schema)\".effects (key integer NOT NULL, pid integer NOT NULL)")
        let keys = 150
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-inbox-\(UUID().uuidString).txt"
        ).path
        _ = FileManager.default.createFile(atPath: ledger, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: ledger) }
        let arguments = [
            "--store", server.url + "?schema=\(schema)", "--keys", "\(keys)", "--ledger", ledger,
            "--effects-table", "\"\(schema)\".effects", "--handler-us", "20000",
        ]
        var running = try (0..<3).map { index in
            try ChildProcess(try BuiltExecutables.path("dedup-worker"), arguments + ["--seed", "\(index + 1)"])
        }
        var killed: [Int32] = []
        for round in 0..<5 {
            // The victim has started a handler (its ledger line is written inside the transaction,
            // which then sleeps 20 ms before committing): kill it there, start a fresh worker.
            let victim = running.removeFirst()
            try await waitForLedgerLine(ledger, from: victim.pid, after: .seconds(60))
            victim.kill()
            await victim.waitForExit()
            killed.append(victim.pid)
            running.append(
                try ChildProcess(try BuiltExecutables.path("dedup-worker"), arguments + ["--seed", "\(round + 10)"])
            )
        }
        for worker in running {
            let status = await worker.waitForExit()
            #expect(status == 0, "a surviving worker failed: \(worker.errors)")
        }
        let perKey = try await server.psql(
            "SELECT coalesce(string_agg(key || ':' || n, ',' ORDER BY key), '') FROM (SELECT key, count(*) AS n FROM \"\(schema)\".effects GROUP BY key HAVING count(*) <> 1) AS wrong"
        )
        #expect(perKey == "", "keys whose effect is not there exactly once")
        #expect(try await server.psql("SELECT count(DISTINCT key) FROM \"\(schema)\".effects") == "\(keys)")
        let stats = try await store.stats()
        #expect(stats.namespaces.first?.completed == keys)
        // The kills landed inside transactions: runs that started left no effect of their own.
        let lines = try String(contentsOfFile: ledger, encoding: .utf8).split(separator: "\n")
        let killedRuns = lines.filter { line in killed.contains { line.split(separator: " ")[1] == "\($0)" } }
        let killedEffects =
            Int(
                try await server.psql(
                    "SELECT count(*) FROM \"\(schema)\".effects WHERE pid IN (\(killed.map(String.init).joined(separator: ",")))"
                )
            ) ?? 0
        #expect(
            killedRuns.count > killedEffects,
            "runs of killed workers: \(killedRuns.count), their effects: \(killedEffects)"
        )
    }

    /// Waits until the ledger holds a line written by `pid` (a handler of it has started).
    private func waitForLedgerLine(_ ledger: String, from pid: Int32, after timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: ledger, encoding: .utf8)) ?? ""
            if text.split(separator: "\n").contains(where: { $0.split(separator: " ").dropFirst().first == "\(pid)" }) {
                return
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw ConformanceStyleFailure("worker \(pid) started no handler within \(timeout)")
    }
}

/// A child process the test can kill, with its standard error kept in a file.
final class ChildProcess: Sendable {
    let pid: Int32
    private let process: Process
    private let errorsFile: URL

    init(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let errorsFile = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-child-\(UUID().uuidString).err"
        )
        _ = FileManager.default.createFile(atPath: errorsFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorsFile)
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.errorsFile = errorsFile
        self.pid = process.processIdentifier
    }

    deinit { try? FileManager.default.removeItem(at: errorsFile) }

    func kill() { Foundation.kill(pid, SIGKILL) }

    /// Waits for the process to end; its exit status.
    @discardableResult
    func waitForExit() async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
        return process.terminationStatus
    }

    var errors: String { (try? String(contentsOf: errorsFile, encoding: .utf8)) ?? "" }
}
