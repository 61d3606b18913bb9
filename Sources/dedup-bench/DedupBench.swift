// dedup-bench: IdempotentConsumer over real SQLite and Redis stores, against the C ceilings of the
// same protocol measured in the same run; one table of ratios, latencies and memory, with targets.
import ArgumentParser
import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import Foundation
import Logging
import Synchronization

@main
struct DedupBench: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        commandName: "dedup-bench",
        abstract:
            "Benchmarks IdempotentConsumer on SQLite, Redis and PostgreSQL against C ceilings measured in the same run.",
        discussion: """
            Starts its own redis-server on loopback (no persistence, temp dir) and its own PostgreSQL server \
            (initdb in a temp dir, as the tests start it), compiles the C ceilings of \
            Benchmarks/Ceilings/ into .build/benchmarks/ (when missing or older than their source) and runs \
            them beside our paths. Prints one Markdown table: our msgs/s, the ceiling's, their ratio, \
            p50/p99 latency per message on the single-message paths, redis-server CPU per message, the \
            growth rows (a store already holding millions of records, a purge beside a consumer, Redis \
            memory per record), memory growth across a million messages, and whether each target is \
            met. Build in release mode: scripts/bench \
            (or swift run -c release dedup-bench). Method and past runs: Benchmarks/README.md.
            """
    )

    enum Only: String, ExpressibleByArgument, CaseIterable { case sqlite, redis, postgres }

    @Flag(
        help:
            "A small N for a quick look (5,000 SQLite, 3,000 Redis messages), one round, small growth stores, no memory check; targets are shown but not judged."
    )
    var quick = false

    @Flag(help: "Run only the memory check: a million messages through --memory-path.")
    var memory = false

    @Flag(help: "Exit with status 1 when a target is missed.")
    var check = false

    @Option(help: "Messages per SQLite path (default 100,000; 5,000 with --quick).")
    var sqliteN: Int?

    @Option(help: "Messages per Redis path (default 50,000; 3,000 with --quick).")
    var redisN: Int?

    @Option(help: "Messages per PostgreSQL path (default 10,000; 1,000 with --quick).")
    var postgresN: Int?

    @Option(
        help:
            "Run every path (ours and the ceiling's) this many times, alternating who goes first, and report the median of each (default 5; 1 with --quick). The machine is noisy: a single pass of either side can land in a slow or a fast spell."
    )
    var rounds: Int?

    @Option(help: "Only one store.")
    var only: Only?

    @Option(
        help: ArgumentHelp(
            "Paths the memory check drives, comma-separated: \(MemoryPath.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "paths"
        )
    )
    var memoryPath = "redis-batch"

    @Option(help: "Messages the memory check pushes.")
    var memoryMessages = 1_000_000

    @Flag(help: "Skip the memory check in a full run.")
    var noMemory = false

    @Flag(help: "Do not run the C ceilings (no ratios are judged).")
    var noCeilings = false

    enum Placement: String, ExpressibleByArgument, CaseIterable { case scheduler, split, shared }

    @Option(
        help:
            "Where redis-server and the clients run, when the benchmark starts its own server (a diagnostic): scheduler (the default: left to the kernel), split (the server on the last CPU, this process and the C ceilings on the others), shared (all on the last CPU: a round trip is two context switches, the short round trip of a fast loopback)."
    )
    var placement: Placement = .scheduler

    @Flag(name: .customLong("pin-cpus"), help: "The same as --placement split.")
    var pinCPUs = false

    @Option(help: "The redis-server to start.")
    var redisServer = "redis-server"

    @Option(
        help: ArgumentHelp(
            "Use a redis-server already listening on 127.0.0.1:PORT instead of starting one; it is FLUSHALLed between paths. For profilers under which starting processes fails (valgrind).",
            valueName: "port"
        )
    )
    var useRedisPort: Int?

    @Flag(
        help:
            "Diagnostic rows: each path straight to the store, without IdempotentConsumer (how much of the gap is the store's, how much the consumer's), and our Redis protocol from a plain C client (Benchmarks/redis_protocol.c: how much is the protocol's)."
    )
    var breakdown = false

    @Flag(
        help:
            "Also run the single and batch Redis paths on a three-primary Redis Cluster the benchmark starts, beside one server (ClusterComparison.swift)."
    )
    var cluster = false

    @Option(help: "Consumer tasks on the concurrent Redis path.")
    var tasks = 8

    enum Group: String, ExpressibleByArgument, CaseIterable { case single, batch, txn, concurrent, stream, growth }

    @Option(
        help:
            "Only these kinds of path (repeatable: single, batch, txn, concurrent, stream, growth), for profiling one of them."
    )
    var group: [Group] = []

    @Option(
        help:
            "Records in the growth group's SQLite store and keys on its Redis server (default 10,000,000; 200,000 with --quick). The SQLite store is filled once and cached under .build/benchmarks/."
    )
    var growthRecords: Int?

    @Option(
        help:
            "Expired records the growth group's purge deletes beside a consumer (default 5,000,000; 100,000 with --quick; 0: no purge)."
    )
    var purgeRecords: Int?

    @Option(
        help:
            "Records the growth group writes through the Redis store for its memory row (default 1,000,000; 100,000 with --quick; 0: no memory row)."
    )
    var redisMemoryRecords: Int?

    func runs(_ kind: Group) -> Bool { group.isEmpty || group.contains(kind) }

    /// Runs the benchmark on Swift's concurrency pool while the main thread waits on a semaphore,
    /// rather than as an async main: the async main parks the main thread in `sigsuspend`, which
    /// valgrind (callgrind, for profiles) cannot follow.
    func run() throws {
        #if DEBUG
        progress("warning: this is a debug build; measure with `swift run -c release dedup-bench` (scripts/bench)")
        #endif
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                try await benchmark()
            } catch {
                outcome.error.withLock { $0 = error }
            }
            done.signal()
        }
        done.wait()
        if let error = outcome.error.withLock({ $0 }) {
            if let error = error as? BenchError {
                progress("dedup-bench: \(error.description)")
                throw ExitCode(2)
            }
            throw error
        }
    }

    private final class Outcome: Sendable {
        let error = Mutex<(any Error)?>(nil)
    }

    private func benchmark() async throws {
        let memoryPaths = try memoryPath.split(separator: ",").map { name -> MemoryPath in
            guard let path = MemoryPath(rawValue: String(name)) else {
                throw BenchError(
                    "unknown memory path \(name); use \(MemoryPath.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return path
        }
        let sqliteN = self.sqliteN ?? (quick ? 5_000 : 100_000)
        let redisN = self.redisN ?? (quick ? 3_000 : 50_000)
        let postgresN = self.postgresN ?? (quick ? 1_000 : 10_000)
        let runSQLite = !memory && (only == nil || only == .sqlite)
        let runRedis = !memory && (only == nil || only == .redis)
        let runPostgres = !memory && (only == nil || only == .postgres) && (runs(.single) || runs(.batch) || runs(.txn))
        let memoryChecks: [MemoryPath] =
            memory
            ? memoryPaths
            : (quick || noMemory
                ? [] : memoryPaths.filter { only == nil || only == ($0.isRedis ? .redis : .sqlite) })
        let needRedis = runRedis || memoryChecks.contains { $0.isRedis }

        let temp = FileManager.default.temporaryDirectory
            .appendingPathComponent("dedup-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: temp) }

        let facts = MachineFacts.read()
        progress("dedup-bench: \(facts.cores) cores, \(facts.cpuModel), \(facts.memory); temp dir \(temp)")

        let placementMode = pinCPUs ? .split : placement
        let placement: CPUPlacement? =
            !needRedis || useRedisPort != nil
            ? nil
            : placementMode == .split ? CPUPlacement.split() : placementMode == .shared ? CPUPlacement.shared() : nil
        if let placement {
            try placement.pinThisProcess()
            progress("placement: \(placement)")
        }
        let runGrowth = !memory && runs(.growth) && only != .postgres
        let programs = noCeilings || memory ? nil : try CPrograms()
        let ceilings = try programs.map {
            try Ceilings(programs: $0, sqlite: runSQLite, redis: runRedis, dataDirectory: temp + "/ceilings")
        }
        let streamCeiling = try programs.flatMap { runRedis && runs(.stream) ? try StreamCeiling(programs: $0) : nil }
        let protocolClient = try programs.flatMap {
            breakdown && runRedis
                ? try ProtocolClient(
                    programs: $0,
                    scriptDirectory: temp + "/protocol",
                    completionScript: RedisDedupStore.completionScriptSource
                ) : nil
        }
        var redis: RedisServer?
        if needRedis {
            if let useRedisPort {
                redis = try RedisServer(existingPort: useRedisPort)
            } else {
                redis = try RedisServer(executable: redisServer, directory: temp + "/redis")
            }
            if let placement, let processID = redis?.processID { try placement.pinServer(processID: processID) }
            progress("redis-server on 127.0.0.1:\(redis!.port)")
        }
        defer { redis?.stop() }
        // Stopped at the end of the run; should the run fail first, the server's supervisor stops
        // it when this process ends (PostgresServer).
        let postgres = runPostgres ? try await PostgresBench.start(programs: programs) : nil

        var logger = Logger(label: "dedup-bench")
        logger.logLevel = .warning
        var results = RunResults()

        // The memory check first, while this process's peak is still its own.
        for path in memoryChecks {
            progress("memory check: \(memoryMessages) messages through \(path.title)")
            let store: any DedupStore
            var redisStore: RedisDedupStore?
            if path.isRedis {
                try redis!.flushAll()
                redisStore = try RedisDedupStore(url: redis!.url, logger: logger)
                store = redisStore!
            } else {
                store = try SQLiteDedupStore(
                    path: "\(temp)/memory-\(path.rawValue).sqlite",
                    configuration: sqliteConfiguration,
                    logger: logger
                )
            }
            let consumer = try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
            results.memory.append(try await measureMemory(consumer, path: path, messages: memoryMessages))
            await redisStore?.close()
            try? removeSQLite("\(temp)/memory-\(path.rawValue).sqlite")
        }

        var generator = KeyGenerator(seed: 0x5EED_0000_0000_0001)
        let sqliteKeys = runSQLite ? generator.keys(sqliteN) : []
        // Each store's keys shaped like its ceiling's: the Redis one claims `<prefix>msg-<i>`.
        let redisKeys = runRedis ? (0..<redisN).map { "msg-\($0)" } : []
        let warmUpKeys = generator.keys(100)
        let sqliteBatches = batched(sqliteKeys, size: 100)
        let redisBatches = batched(redisKeys, size: 100)
        // Shaped like the PostgreSQL ceiling's keys, `msg-<i>`.
        let postgresKeys = runPostgres ? (0..<postgresN).map { "msg-\($0)" } : []
        results.startMemory = MemoryReading.now()

        let workload = Workload(
            sqliteKeys: sqliteKeys,
            sqliteBatches: sqliteBatches,
            redisKeys: redisKeys,
            redisBatches: redisBatches,
            warmUp: warmUpKeys,
            temp: temp,
            postgresKeys: postgresKeys,
            redis: redis,
            postgres: postgres,
            ceilings: ceilings,
            protocolClient: protocolClient,
            streamCeiling: streamCeiling,
            logger: logger
        )
        var pairs: [(ceiling: Side?, ours: Side)] = []
        if runSQLite {
            if runs(.single) { pairs.append((.sqliteCeiling(.single), .sqliteOurs(.single))) }
            if runs(.batch) { pairs.append((.sqliteCeiling(.batch), .sqliteOurs(.batch))) }
            if runs(.txn) { pairs.append((.sqliteCeiling(.txn), .sqliteOurs(.txn))) }
        }
        if runRedis {
            if runs(.single) { pairs.append((.redisCeiling(batch: 1), .redisOurs(.single))) }
            if runs(.batch) { pairs.append((.redisCeiling(batch: 100), .redisOurs(.batch))) }
            if runs(.concurrent) {
                pairs.append((.redisCeiling(batch: tasks, inFlight: true), .redisOurs(.concurrent)))
            }
            if runs(.stream) {
                // One ceiling pass a round serves the four stream paths (the same plain consumer).
                pairs.append((.streamCeiling, .streamOurs(.sqlite, .oneByOne)))
                pairs.append((nil, .streamOurs(.sqlite, .batch)))
                pairs.append((nil, .streamOurs(.redis, .oneByOne)))
                pairs.append((nil, .streamOurs(.redis, .batch)))
            }
        }
        if runPostgres {
            for mode in PostgresBench.Mode.allCases where runs(mode.group) {
                pairs.append((.postgresReferences(mode), .postgresOurs(mode)))
            }
        }
        let rounds = max(1, self.rounds ?? (quick ? 1 : 5))
        for round in 1...rounds {
            // Each path's ceiling pass runs right beside ours, so the two meet the same spell of the
            // machine; who goes first alternates, so neither always gets the cooler machine.
            let ceilingFirst = round % 2 == 1
            if let redis, pairs.contains(where: { $0.ours.isRedis }) {
                try measureRoundTrip(redis, into: &results)
            }
            for pair in pairs {
                var sides = [pair.ours]
                // `run` skips a ceiling side when the ceilings are not run (--no-ceilings).
                if let ceiling = pair.ceiling { sides.insert(ceiling, at: ceilingFirst ? 0 : 1) }
                for side in sides { try await run(side, workload, round: round, into: &results) }
            }
        }
        if runGrowth {
            let sizes = GrowthSizes(
                sqliteRecords: growthRecords ?? (quick ? 200_000 : 10_000_000),
                purgeRecords: purgeRecords ?? (quick ? 100_000 : 5_000_000),
                redisKeys: growthRecords ?? (quick ? 200_000 : 10_000_000),
                redisMemoryRecords: redisMemoryRecords ?? (quick ? 100_000 : 1_000_000),
                passMessages: sqliteN,
                redisPassMessages: redisN,
                rounds: rounds
            )
            let growth = Growth(
                sizes: sizes,
                programs: try programs ?? CPrograms(),
                temp: temp,
                logger: logger,
                redis: only == .sqlite ? nil : redis,
                redisExecutable: useRedisPort == nil ? redisServer : nil,
                placement: placement
            )
            if only != .redis { try await growth.runSQLite(into: &results) }
            if only != .sqlite { try await growth.runRedis(into: &results) }
        }
        await postgres?.stop()
        results.endMemory = MemoryReading.now()

        let report = Report(results: results, usedCeilings: ceilings != nil || memory, judgesRatios: !quick)
        let (table, allMet, judged) = report.render()
        var out = "Machine: \(facts.cores) cores, \(facts.cpuModel), \(facts.memory) memory. "
        out += "Command: `\(commandLine())`"
        if rounds > 1 { out += " (the median of \(rounds) rounds for ours and the ceilings alike)" }
        out += ".\n"
        out += placement.map { "Placement: \($0)." } ?? "Placement: left to the scheduler."
        if let roundTrip = median(results.roundTrips, by: { $0 }), let low = results.roundTrips.min(),
            let high = results.roundTrips.max()
        {
            out += String(
                format: " Loopback round trip (PING, the median of %d, at the start of each round): %.0f µs",
                roundTripPings,
                roundTrip
            )
            out += results.roundTrips.count > 1 ? String(format: " (rounds %.0f–%.0f µs).", low, high) : "."
        }
        out += "\n"
        out += "\n" + table + "\n"
        print(out)
        let clusterMet =
            cluster ? try await compareCluster(redisN: redisN, temp: temp, rounds: rounds, logger: logger) : true
        if check {
            if !allMet || !clusterMet {
                progress("dedup-bench: a target was missed")
                throw ExitCode(1)
            }
            if judged == 0 {
                progress("dedup-bench: --check judged no target")
                throw ExitCode(1)
            }
        }
    }

    private func commandLine() -> String {
        let arguments = CommandLine.arguments.dropFirst()
        return (["dedup-bench"] + arguments).joined(separator: " ")
    }
}

/// A pass as the progress lines show it: msgs/s, latency, server CPU.
func describe(_ measurement: Measurement) -> String {
    var line = "\(thousands(measurement.rate)) msgs/s"
    if let latency = measurement.latency {
        line += String(format: ", p50 %.0f µs, p99 %.0f µs", latency.p50, latency.p99)
    }
    if let server = measurement.serverMicrosecondsPerMessage {
        line += String(format: ", redis-server CPU %.1f µs/msg", server)
    }
    return line
}

/// A consumer on a fresh SQLite file at `path`.
func sqliteConsumer(path: String, logger: Logger) throws -> IdempotentConsumer {
    let store = try SQLiteDedupStore(path: try freshFile(path), configuration: sqliteConfiguration, logger: logger)
    return try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
}

/// A store and a consumer on `redis`.
func redisConsumer(_ redis: RedisServer, logger: Logger) throws -> (RedisDedupStore, IdempotentConsumer) {
    let store = try RedisDedupStore(url: redis.url, logger: logger)
    return (store, try IdempotentConsumer(store: store, namespace: "bench", logger: logger))
}

/// `path`, after deleting any SQLite file (and companions) there.
func freshFile(_ path: String) throws -> String {
    try removeSQLite(path)
    return path
}

/// The ceiling's pragmas: WAL (always, in this store) and synchronous=NORMAL.
let sqliteConfiguration = SQLiteDedupStore.Configuration(synchronous: .normal)

/// Deletes an SQLite file and its WAL and shared-memory companions.
func removeSQLite(_ path: String) throws {
    for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
        try FileManager.default.removeItem(atPath: path + suffix)
    }
}
