import Dedup
import Foundation
import Synchronization

/// The stream demo's consumer processes: this executable in its `stream-worker` mode, one per
/// slot, each under its slot's consumer name. A killed process is replaced under the same name,
/// as a restarted pod would be, so it first processes the entries it had read but not acked.
final class StreamWorkerFleet: Sendable {
    private struct Worker {
        var process: Process
        var name: String
    }

    private struct State {
        var workers: [Worker] = []
        var started = 0
        /// Killed at random, mid-work.
        var killed: Set<Int32> = []
        /// Killed at random or stopped at the end: their end is expected.
        var ended: Set<Int32> = []
        /// A process that ended on its own: what it said.
        var failure: String?
    }

    private let arguments: @Sendable (_ consumerName: String) -> [String]
    private let logFolder: URL
    private let state = Mutex(State())

    /// - Parameters:
    ///   - arguments: the `stream-worker` arguments for a consumer name.
    ///   - logFolder: where each process's standard error goes (`<name>-<pid>.log`).
    init(logFolder: URL, arguments: @escaping @Sendable (_ consumerName: String) -> [String]) {
        self.logFolder = logFolder
        self.arguments = arguments
    }

    /// Processes started so far, replacements included.
    var started: Int { state.withLock { $0.started } }
    /// The processes killed with SIGKILL at random (not those stopped at the end).
    var killed: Set<Int32> { state.withLock { $0.killed } }
    /// Why a process ended on its own, if one did.
    var failure: String? { state.withLock { $0.failure } }

    /// Starts one process under each of `names`.
    func start(_ names: [String]) throws {
        for name in names { try startWorker(name) }
    }

    private func startWorker(_ name: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.executablePath())
        process.arguments = ["stream-worker"] + arguments(name)
        let log = logFolder.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        process.terminationHandler = { [self] process in
            try? handle.close()
            let pid = process.processIdentifier
            state.withLock { state in
                guard !state.ended.contains(pid), state.failure == nil else { return }
                let said = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                state.failure =
                    "consumer process \(name) (pid \(pid)) exited with status \(process.terminationStatus): "
                    + String(said.suffix(800)).trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        try process.run()
        state.withLock { state in
            state.workers.append(Worker(process: process, name: name))
            state.started += 1
        }
    }

    /// Kills the process running as one of `holders` (chosen with `random`) with SIGKILL and starts
    /// a replacement under its name; returns the name, or `nil` when none of them runs here.
    func killOne(among holders: [String], using random: inout some RandomNumberGenerator) throws -> String? {
        let candidates = state.withLock { state in state.workers.filter { holders.contains($0.name) } }
        guard let victim = candidates.randomElement(using: &random) else { return nil }
        let pid = victim.process.processIdentifier
        state.withLock { state in
            state.killed.insert(pid)
            state.ended.insert(pid)
            state.workers.removeAll { $0.process.processIdentifier == pid }
        }
        kill(pid, SIGKILL)
        victim.process.waitUntilExit()
        try startWorker(victim.name)
        return victim.name
    }

    /// Kills every process (their entries are all acked by then) and waits for them.
    func stopAll() {
        let workers = state.withLock { state in
            defer { state.workers = [] }
            for worker in state.workers { state.ended.insert(worker.process.processIdentifier) }
            return state.workers
        }
        for worker in workers {
            kill(worker.process.processIdentifier, SIGKILL)
            worker.process.waitUntilExit()
        }
    }

    /// This executable's path, for starting its worker mode.
    private static func executablePath() throws -> String {
        if let path = Bundle.main.executablePath { return path }
        throw DedupError(.invalidConfiguration, "cannot find the dedup-demo executable to start its consumer processes")
    }
}
