// The C ceilings (shared/baselines/run-ceilings): located next to the repository, built and run in
// the same run as our paths, their `msgs_per_s=` lines parsed.
import Foundation

/// One line a ceiling program printed: `sqlite mode=single ... pass=unique n=.. msgs_per_s=..`.
struct CeilingLine {
    var store: String
    var fields: [String: String]

    init?(_ line: Substring) {
        let words = line.split(separator: " ")
        guard let first = words.first, first == "sqlite" || first == "redis" || first == "stream" else { return nil }
        store = String(first)
        fields = [:]
        for word in words.dropFirst() {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        guard rate != nil else { return nil }
    }

    var rate: Double? { fields["msgs_per_s"].flatMap(Double.init) }
    var isDuplicatePass: Bool { fields["pass"] == "duplicate" }
}

/// The ceilings' throughput by path: the median of the passes a run made (see ``median(_:by:)``).
struct CeilingRates {
    /// Every pass's rate, by path, in the order they ran (one a round).
    private var passes: [BenchPath: [Double]] = [:]

    mutating func take(_ output: String) {
        for line in output.split(separator: "\n") {
            guard let parsed = CeilingLine(line), let rate = parsed.rate else { continue }
            let dup = parsed.isDuplicatePass
            if parsed.store == "stream" {
                // One plain consumer's pass is the ceiling of every stream path.
                for path in BenchPath.streamPaths { passes[path, default: []].append(rate) }
                continue
            }
            let path: BenchPath
            switch (parsed.store, parsed.fields["mode"], parsed.fields["batch"]) {
            case ("sqlite", "single", _): path = dup ? .sqliteSingleDuplicate : .sqliteSingle
            case ("sqlite", "batch", _): path = dup ? .sqliteBatchDuplicate : .sqliteBatch
            case ("redis", _, "1"): path = dup ? .redisSingleDuplicate : .redisSingle
            case ("redis", _, "100"): path = dup ? .redisBatchDuplicate : .redisBatch
            default: continue
            }
            passes[path, default: []].append(rate)
        }
    }

    /// The median pass's rate of one path; `nil` when it was not run.
    func rate(_ path: BenchPath) -> Double? {
        passes[path].flatMap { median($0, by: { $0 }) }
    }

    /// Every pass's rate of one path, in the order they ran.
    func passes(of path: BenchPath) -> [Double] {
        passes[path] ?? []
    }
}

/// The median of a run's passes of one path, by rate: the middle one, or the slower of the two in
/// the middle when there is an even number of them; `nil` for none. Ours and the ceilings are
/// judged alike by it. The machine's slow and fast spells each hit one pass of one side at a time
/// (a pass of the Redis ceiling's batch of 100 has run anywhere from 85,000 to 151,000 msgs/s in
/// one run); the median of each side sets the two side by side as they usually run, where the best
/// of each would set the luckiest pass of one against the luckiest of the other.
func median<Element>(_ passes: [Element], by rate: (Element) -> Double) -> Element? {
    guard !passes.isEmpty else { return nil }
    return passes.sorted { rate($0) < rate($1) }[(passes.count - 1) / 2]
}

/// The C ceilings of `run-ceilings` in the baselines directory. `build` runs the script once with a
/// token N, which builds the programs (and checks they run); each pass then runs one program for
/// one path, so a path's ceiling can run right beside our pass of the same path. The programs and
/// their arguments are the ones the script runs.
struct Ceilings {
    let script: String
    let buildDirectory: String

    /// A pass of the SQLite ceiling: `single` (a transaction for the claim and one for the
    /// completion) or `batch` (100 claims in one transaction, their completions in another).
    enum SQLiteMode: String { case single, batch }

    /// Finds `run-ceilings`: `--baselines DIR` if given, else `shared/baselines` beside the root of
    /// the repository that holds the working directory or this executable.
    init(baselines: String?, buildDirectory: String) throws {
        self.buildDirectory = buildDirectory
        if let baselines {
            let script = URL(fileURLWithPath: baselines).appendingPathComponent("run-ceilings").path
            guard FileManager.default.isExecutableFile(atPath: script) else {
                throw BenchError("no executable run-ceilings in \(baselines)")
            }
            self.script = script
            return
        }
        var tried: [String] = []
        for root in repositoryRoots() {
            let script = root.deletingLastPathComponent().appendingPathComponent("shared/baselines/run-ceilings").path
            if FileManager.default.isExecutableFile(atPath: script) {
                self.script = script
                return
            }
            tried.append(script)
        }
        throw BenchError(
            "cannot find the C ceilings (looked for \(tried.isEmpty ? "a repository root above \(FileManager.default.currentDirectoryPath)" : tried.joined(separator: ", "))): pass --baselines DIR (the folder holding run-ceilings), or --no-ceilings"
        )
    }

    /// Builds the SQLite ceiling, the Redis one (given a server), or both, by running `run-ceilings`
    /// with 100 messages (output discarded).
    func build(sqlite: Bool, redis: (host: String, port: Int)?) throws {
        if sqlite {
            _ = try runProgram(script, ["sqlite", "100"], environment: ["CEILING_BUILD_DIR": buildDirectory])
            try requireProgram("sqlite_ceiling")
        }
        if let redis {
            _ = try runProgram(script, ["redis", redis.host, "\(redis.port)", "100"], environment: ["CEILING_BUILD_DIR": buildDirectory])
            try requireProgram("redis_ceiling")
        }
    }

    /// One SQLite pass (new keys, then the same keys again), as `run-ceilings sqlite N` runs it.
    func runSQLite(_ mode: SQLiteMode, n: Int) throws -> String {
        let batch = mode == .batch ? "100" : "1"
        return try runProgram(
            program("sqlite_ceiling"), [mode.rawValue, "NORMAL", "\(n)", batch, buildDirectory + "/ceiling.sqlite"]
        )
    }

    /// One Redis pass (new keys, then the same keys again) with claims pipelined `batch` at a time,
    /// as `run-ceilings redis HOST PORT N` runs it.
    func runRedis(host: String, port: Int, n: Int, batch: Int) throws -> String {
        try runProgram(program("redis_ceiling"), [host, "\(port)", "\(n)", "\(batch)"])
    }

    private func program(_ name: String) -> String { buildDirectory + "/" + name }

    private func requireProgram(_ name: String) throws {
        guard FileManager.default.isExecutableFile(atPath: program(name)) else {
            throw BenchError("run-ceilings did not leave \(name) in CEILING_BUILD_DIR (\(buildDirectory)): has the script changed?")
        }
    }
}

/// The repositories (folders holding Package.swift) above the working directory and above this
/// executable, nearest first.
func repositoryRoots() -> [URL] {
    let starts = [
        FileManager.default.currentDirectoryPath,
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path,
    ]
    var roots: [URL] = []
    for start in starts {
        var directory = URL(fileURLWithPath: start).standardizedFileURL
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                if !roots.contains(directory) { roots.append(directory) }
                break
            }
            directory.deleteLastPathComponent()
        }
    }
    return roots
}

/// Our Redis protocol from a plain C client (Benchmarks/redis_protocol.c), for `--breakdown`: built
/// with `cc` like the ceilings, run with the store's own completion script.
struct ProtocolClient {
    let executable: String
    let scriptFile: String

    init(buildDirectory: String, completionScript: String) throws {
        guard let source = repositoryRoots().map({ $0.appendingPathComponent("Benchmarks/redis_protocol.c").path })
            .first(where: { FileManager.default.fileExists(atPath: $0) })
        else { throw BenchError("cannot find Benchmarks/redis_protocol.c above the working directory (needed by --breakdown)") }
        try FileManager.default.createDirectory(atPath: buildDirectory, withIntermediateDirectories: true)
        executable = buildDirectory + "/redis_protocol"
        scriptFile = buildDirectory + "/complete.lua"
        try completionScript.write(toFile: scriptFile, atomically: true, encoding: .utf8)
        _ = try runProgram("/usr/bin/env", ["cc", "-O2", "-o", executable, source, "-lhiredis"], environment: [:])
    }

    /// One pass with claims pipelined `batch` at a time, printed as the Redis ceiling prints it.
    func run(host: String, port: Int, n: Int, batch: Int) throws -> String {
        try runProgram(executable, [host, "\(port)", "\(n)", "\(batch)", scriptFile])
    }
}
