// The C ceilings (shared/baselines/run-ceilings): located next to the repository, built and run in
// the same run as our paths, their `msgs_per_s=` lines parsed.
import Foundation

/// One line a ceiling program printed: `sqlite mode=single ... pass=unique n=.. msgs_per_s=..`.
struct CeilingLine {
    var store: String
    var fields: [String: String]

    init?(_ line: Substring) {
        let words = line.split(separator: " ")
        guard let first = words.first, first == "sqlite" || first == "redis" else { return nil }
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

/// The ceilings' throughput by path.
struct CeilingRates {
    var sqliteSingle: Double?
    var sqliteSingleDuplicate: Double?
    var sqliteBatch: Double?
    var sqliteBatchDuplicate: Double?
    var sqliteTransactional: Double?
    var redisSingle: Double?
    var redisSingleDuplicate: Double?
    var redisBatch: Double?
    var redisBatchDuplicate: Double?

    mutating func take(_ output: String) {
        for line in output.split(separator: "\n") {
            guard let parsed = CeilingLine(line), let rate = parsed.rate else { continue }
            let dup = parsed.isDuplicatePass
            switch (parsed.store, parsed.fields["mode"], parsed.fields["batch"]) {
            case ("sqlite", "single", _): dup ? keepBest(&sqliteSingleDuplicate, rate) : keepBest(&sqliteSingle, rate)
            case ("sqlite", "batch", _): dup ? keepBest(&sqliteBatchDuplicate, rate) : keepBest(&sqliteBatch, rate)
            case ("sqlite", "txn", _): if !dup { keepBest(&sqliteTransactional, rate) }
            case ("redis", _, "1"): dup ? keepBest(&redisSingleDuplicate, rate) : keepBest(&redisSingle, rate)
            case ("redis", _, "100"): dup ? keepBest(&redisBatchDuplicate, rate) : keepBest(&redisBatch, rate)
            default: break
            }
        }
    }

    private func keepBest(_ slot: inout Double?, _ rate: Double) {
        slot = max(slot ?? 0, rate)
    }
}

/// Runs `run-ceilings` from the baselines directory.
struct Ceilings {
    let script: String
    let buildDirectory: String

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

    func runSQLite(n: Int) throws -> String {
        try runProgram(script, ["sqlite", "\(n)"], environment: ["CEILING_BUILD_DIR": buildDirectory])
    }

    func runRedis(host: String, port: Int, n: Int) throws -> String {
        try runProgram(script, ["redis", host, "\(port)", "\(n)"], environment: ["CEILING_BUILD_DIR": buildDirectory])
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

    /// The single-message (batch 1) and batch-of-100 passes, as the Redis ceiling prints them.
    func run(host: String, port: Int, n: Int) throws -> String {
        try ["1", "100"].map { try runProgram(executable, [host, "\(port)", "\(n)", $0, scriptFile], environment: [:]) }
            .joined(separator: "\n")
    }
}
