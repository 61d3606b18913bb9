import Foundation

/// Runs several `dedup-worker` processes at once on one store and reads their shared ledger: one
/// line per handler run, `<key number> <pid> <fencing token>`.
public enum WorkerFleet {
    /// What the processes did together.
    public struct Outcome: Sendable {
        /// Handler runs per key number.
        public var runsPerKey: [Int: Int]
        /// Distinct processes that ran at least one handler.
        public var processesThatApplied: Int
        /// Each process's summary line.
        public var summaries: [String]
    }

    /// A fresh path for a ledger (the file is created by the first worker run).
    public static func temporaryLedgerPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("dedup-ledger-\(UUID().uuidString).txt").path
    }

    /// Lines in a ledger so far (0 before the first run).
    public static func linesSoFar(in ledger: String) -> Int {
        guard let data = FileManager.default.contents(atPath: ledger) else { return 0 }
        return data.count { $0 == UInt8(ascii: "\n") }
    }

    /// Starts `processes` workers with `arguments` (plus `--ledger` and `--seed`), waits for all, and
    /// fails if any exits non-zero.
    ///
    /// `ledger` names the ledger file (a fresh temporary one by default), for a test that watches
    /// the run's progress while it goes on.
    public static func run(
        processes: Int,
        store: String,
        keys: Int,
        extraArguments: [String] = [],
        ledger: String? = nil
    ) async throws -> Outcome {
        let worker = try BuiltExecutables.path("dedup-worker")
        let ledger =
            ledger
            ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("dedup-ledger-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: ledger) }
        // Start together: process start-up takes long enough for one worker to finish alone, so each
        // waits at a barrier until all are connected.
        let barrier = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-barrier-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: barrier, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: barrier) }
        let go = barrier.appendingPathComponent("go").path
        // Whatever happens, let waiting workers go, so a failed start never leaves them hanging.
        defer { _ = FileManager.default.createFile(atPath: go, contents: nil) }
        let (results, allReady) = try await withThrowingTaskGroup(of: ProcessResult.self) { group in
            for index in 0..<processes {
                group.addTask {
                    try await runProcess(
                        worker,
                        [
                            "--store", store, "--keys", "\(keys)", "--ledger", ledger, "--seed", "\(index + 1)",
                            "--barrier", barrier.path,
                        ] + extraArguments
                    )
                }
            }
            // Wait until every worker is connected, or one has given up (its stderr says why below).
            let deadline = ContinuousClock.now + .seconds(60)
            var allReady = false
            while ContinuousClock.now < deadline {
                if try FileManager.default.contentsOfDirectory(atPath: barrier.path).count >= processes {
                    allReady = true
                    break
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            return (try await group.reduce(into: []) { $0.append($1) }, allReady)
        }
        for result in results where result.status != 0 {
            throw RedisServer.Failure(description: "dedup-worker exited with \(result.status): \(result.errors)")
        }
        guard allReady else {
            throw RedisServer.Failure(description: "the workers did not all get ready within 60 s")
        }
        let lines = (try String(contentsOfFile: ledger, encoding: .utf8)).split(separator: "\n")
        var runsPerKey: [Int: Int] = [:]
        var pids = Set<Substring>()
        for line in lines {
            let fields = line.split(separator: " ")
            guard fields.count == 3, let key = Int(fields[0]) else {
                throw RedisServer.Failure(description: "unreadable ledger line \(line.debugDescription)")
            }
            runsPerKey[key, default: 0] += 1
            pids.insert(fields[1])
        }
        return Outcome(runsPerKey: runsPerKey, processesThatApplied: pids.count, summaries: results.map(\.output))
    }
}
