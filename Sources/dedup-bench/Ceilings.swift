// The C ceilings (Benchmarks/Ceilings/), run in the same run as our paths, their `msgs_per_s=`
// lines parsed.
import Foundation

/// One line a ceiling program printed: `sqlite mode=single ... pass=unique n=.. msgs_per_s=..`.
struct CeilingLine {
    var store: String
    var fields: [String: String]

    init?(_ line: Substring) {
        let words = line.split(separator: " ")
        guard let first = words.first, ["sqlite", "redis", "stream", "postgres"].contains(first) else { return nil }
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
    /// redis-server's CPU time per message of the pass, in microseconds, when the line says it.
    var serverMicrosecondsPerMessage: Double? {
        guard let microseconds = fields["server_cpu_us"].flatMap(Double.init),
            let n = fields["n"].flatMap(Double.init), n > 0
        else { return nil }
        return microseconds / n
    }
}

/// The ceilings' throughput by path: the median of the passes a run made (see ``median(_:by:)``),
/// and on the Redis paths the server's CPU time per message.
struct CeilingRates {
    /// Every pass's rate, by path, in the order they ran (one a round).
    private var passes: [BenchPath: [Double]] = [:]
    /// Every pass's redis-server CPU time per message in microseconds, by path (Redis ceilings).
    private var serverCPU: [BenchPath: [Double]] = [:]

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
            case ("sqlite", "txn", _): path = dup ? .sqliteTxnDuplicate : .sqliteTxn
            case ("postgres", "single", _): path = dup ? .postgresSingleDuplicate : .postgresSingle
            case ("postgres", "batch", _): path = dup ? .postgresBatchDuplicate : .postgresBatch
            case ("postgres", "txn", _): path = dup ? .postgresTxnDuplicate : .postgresTxn
            case ("redis", "inflight", _):
                // The C client with as many messages in flight is the ceiling of both concurrent paths.
                for path in BenchPath.concurrentPaths {
                    passes[path, default: []].append(rate)
                    if let cpu = parsed.serverMicrosecondsPerMessage { serverCPU[path, default: []].append(cpu) }
                }
                continue
            case ("redis", _, "1"): path = dup ? .redisSingleDuplicate : .redisSingle
            case ("redis", _, "100"): path = dup ? .redisBatchDuplicate : .redisBatch
            default: continue
            }
            passes[path, default: []].append(rate)
            if let cpu = parsed.serverMicrosecondsPerMessage { serverCPU[path, default: []].append(cpu) }
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

    /// The median of the passes' redis-server CPU time per message, in microseconds.
    func serverMicrosecondsPerMessage(_ path: BenchPath) -> Double? {
        serverCPU[path].flatMap { median($0, by: { $0 }) }
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

/// The C ceilings of `Benchmarks/Ceilings/`: `sqlite_ceiling.c` and `redis_ceiling.c`, compiled by
/// ``CPrograms``. Each pass runs one program for one path, so a path's ceiling can run right beside
/// our pass of the same path.
struct Ceilings {
    /// The compiled SQLite ceiling; `nil` when the run has no SQLite path.
    let sqliteProgram: String?
    /// The compiled Redis ceiling; `nil` when the run has no Redis path.
    let redisProgram: String?
    /// Where the SQLite ceiling keeps its database (the run's temporary directory).
    let dataDirectory: String

    /// A pass of the SQLite ceiling: `single` (a transaction for the claim and one for the
    /// completion), `batch` (100 claims in one transaction, their completions in another) or `txn`
    /// (the claim, one effect row and the completion in one transaction).
    enum SQLiteMode: String { case single, batch, txn }

    /// Compiles the ceilings the run needs (when they are missing or older than their source).
    init(programs: CPrograms, sqlite: Bool, redis: Bool, dataDirectory: String) throws {
        sqliteProgram =
            sqlite ? try programs.executable(source: "Benchmarks/Ceilings/sqlite_ceiling.c", library: "sqlite3") : nil
        redisProgram =
            redis ? try programs.executable(source: "Benchmarks/Ceilings/redis_ceiling.c", library: "hiredis") : nil
        self.dataDirectory = dataDirectory
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
    }

    /// One SQLite pass (new keys, then the same keys again) with WAL and synchronous=NORMAL, as
    /// our store is configured.
    func runSQLite(_ mode: SQLiteMode, n: Int) throws -> String {
        guard let sqliteProgram else { throw BenchError("the SQLite ceiling was not built for this run") }
        let batch = mode == .batch ? "100" : "1"
        return try runProgram(
            sqliteProgram,
            [mode.rawValue, "NORMAL", "\(n)", batch, dataDirectory + "/ceiling.sqlite"]
        )
    }

    /// One Redis pass (new keys, then the same keys again) with claims pipelined `batch` at a time;
    /// or with `inFlight`, one pass of new keys with `batch` messages in flight on the connection.
    func runRedis(host: String, port: Int, n: Int, batch: Int, inFlight: Bool = false) throws -> String {
        guard let redisProgram else { throw BenchError("the Redis ceiling was not built for this run") }
        return try runProgram(redisProgram, [host, "\(port)", "\(n)", "\(batch)", inFlight ? "inflight" : "batch"])
    }
}

/// Our Redis protocol from a plain C client (Benchmarks/redis_protocol.c), for `--breakdown`: compiled
/// like the ceilings, run with the store's own completion script.
struct ProtocolClient {
    let executable: String
    let scriptFile: String

    init(programs: CPrograms, scriptDirectory: String, completionScript: String) throws {
        executable = try programs.executable(source: "Benchmarks/redis_protocol.c", library: "hiredis")
        try FileManager.default.createDirectory(atPath: scriptDirectory, withIntermediateDirectories: true)
        scriptFile = scriptDirectory + "/complete.lua"
        try completionScript.write(toFile: scriptFile, atomically: true, encoding: .utf8)
    }

    /// One pass with claims pipelined `batch` at a time, printed as the Redis ceiling prints it.
    func run(host: String, port: Int, n: Int, batch: Int) throws -> String {
        try runProgram(executable, [host, "\(port)", "\(n)", "\(batch)", scriptFile])
    }
}
