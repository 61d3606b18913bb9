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
        abstract: "Benchmarks IdempotentConsumer on SQLite and Redis against C ceilings measured in the same run.",
        discussion: """
            Starts its own redis-server on loopback (no persistence, temp dir), compiles the C ceilings of \
            Benchmarks/Ceilings/ into .build/benchmarks/ (when missing or older than their source) and runs \
            them beside our paths. Prints one Markdown table: our msgs/s, the ceiling's, their ratio, \
            p50/p99 latency per message on the single-message paths, memory growth across a million \
            messages, and whether each target is met. Build in release mode: scripts/bench \
            (or swift run -c release dedup-bench). Method and past runs: Benchmarks/README.md.
            """
    )

    enum Only: String, ExpressibleByArgument, CaseIterable { case sqlite, redis }

    @Flag(help: "A small N for a quick look (5,000 SQLite, 3,000 Redis messages), one round, no memory check; ratios are shown but not judged.")
    var quick = false

    @Flag(help: "Run only the memory check: a million messages through --memory-path.")
    var memory = false

    @Flag(help: "Exit with status 1 when a target is missed.")
    var check = false

    @Option(help: "Messages per SQLite path (default 100,000; 5,000 with --quick).")
    var sqliteN: Int?

    @Option(help: "Messages per Redis path (default 50,000; 3,000 with --quick).")
    var redisN: Int?

    @Option(
        help: "Run every path (ours and the ceiling's) this many times, alternating who goes first, and report the median of each (default 5; 1 with --quick). The machine is noisy: a single pass of either side can land in a slow or a fast spell."
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

    @Flag(
        name: .customLong("pin-cpus"),
        help: "Pin CPUs (a diagnostic; placement is left to the scheduler by default): when the benchmark starts its own redis-server and may use two or more CPUs, the server gets the last one and this process and the C ceilings the others."
    )
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
        help: "Diagnostic rows: each path straight to the store, without IdempotentConsumer (how much of the gap is the store's, how much the consumer's), and our Redis protocol from a plain C client (Benchmarks/redis_protocol.c: how much is the protocol's)."
    )
    var breakdown = false

    @Flag(help: "Also run the single and batch Redis paths on a three-primary Redis Cluster the benchmark starts, beside one server (ClusterComparison.swift).")
    var cluster = false

    @Option(help: "Consumer tasks on the concurrent Redis path.")
    var tasks = 8

    enum Group: String, ExpressibleByArgument, CaseIterable { case single, batch, concurrent, stream }

    @Option(help: "Only these kinds of path (repeatable: single, batch, concurrent, stream), for profiling one of them.")
    var group: [Group] = []

    private func runs(_ kind: Group) -> Bool { group.isEmpty || group.contains(kind) }

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
                throw BenchError("unknown memory path \(name); use \(MemoryPath.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return path
        }
        let sqliteN = self.sqliteN ?? (quick ? 5_000 : 100_000)
        let redisN = self.redisN ?? (quick ? 3_000 : 50_000)
        let runSQLite = !memory && only != .redis
        let runRedis = !memory && only != .sqlite
        let memoryChecks: [MemoryPath] =
            memory ? memoryPaths : (quick || noMemory ? [] : memoryPaths.filter { only == nil || ($0.isRedis == (only == .redis)) })
        let needRedis = runRedis || memoryChecks.contains { $0.isRedis }

        let temp = FileManager.default.temporaryDirectory
            .appendingPathComponent("dedup-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: temp) }

        let facts = MachineFacts.read()
        progress("dedup-bench: \(facts.cores) cores, \(facts.cpuModel), \(facts.memory); temp dir \(temp)")

        let placement = needRedis && useRedisPort == nil && pinCPUs ? CPUPlacement.split() : nil
        if let placement {
            try placement.pinThisProcess()
            progress("placement: \(placement)")
        }
        let programs = noCeilings || memory ? nil : try CPrograms()
        let ceilings = try programs.map {
            try Ceilings(programs: $0, sqlite: runSQLite, redis: runRedis, dataDirectory: temp + "/ceilings")
        }
        let streamCeiling = try programs.flatMap { runRedis && runs(.stream) ? try StreamCeiling(programs: $0) : nil }
        let protocolClient = try programs.flatMap {
            breakdown && runRedis
                ? try ProtocolClient(
                    programs: $0, scriptDirectory: temp + "/protocol", completionScript: RedisDedupStore.completionScriptSource
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
                store = try SQLiteDedupStore(path: "\(temp)/memory-\(path.rawValue).sqlite", configuration: sqliteConfiguration, logger: logger)
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
        results.startMemory = MemoryReading.now()

        let workload = Workload(
            sqliteKeys: sqliteKeys, sqliteBatches: sqliteBatches, redisKeys: redisKeys, redisBatches: redisBatches,
            warmUp: warmUpKeys, temp: temp, redis: redis, ceilings: ceilings, protocolClient: protocolClient,
            streamCeiling: streamCeiling, logger: logger
        )
        var pairs: [(ceiling: Side?, ours: Side)] = []
        if runSQLite {
            if runs(.single) { pairs.append((.sqliteCeiling(.single), .sqliteOurs(.single))) }
            if runs(.batch) { pairs.append((.sqliteCeiling(.batch), .sqliteOurs(.batch))) }
        }
        if runRedis {
            if runs(.single) { pairs.append((.redisCeiling(batch: 1), .redisOurs(.single))) }
            if runs(.batch) { pairs.append((.redisCeiling(batch: 100), .redisOurs(.batch))) }
            if runs(.concurrent) { pairs.append((nil, .redisOurs(.concurrent))) }
            if runs(.stream) {
                // One ceiling pass a round serves the four stream paths (the same plain consumer).
                pairs.append((.streamCeiling, .streamOurs(.sqlite, .oneByOne)))
                pairs.append((nil, .streamOurs(.sqlite, .batch)))
                pairs.append((nil, .streamOurs(.redis, .oneByOne)))
                pairs.append((nil, .streamOurs(.redis, .batch)))
            }
        }
        let rounds = max(1, self.rounds ?? (quick ? 1 : 5))
        for round in 1...rounds {
            // Each path's ceiling pass runs right beside ours, so the two meet the same spell of the
            // machine; who goes first alternates, so neither always gets the cooler machine.
            let ceilingFirst = round % 2 == 1
            for pair in pairs {
                var sides = [pair.ours]
                // `run` skips a ceiling side when the ceilings are not run (--no-ceilings).
                if let ceiling = pair.ceiling { sides.insert(ceiling, at: ceilingFirst ? 0 : 1) }
                for side in sides { try await run(side, workload, round: round, into: &results) }
            }
        }
        results.endMemory = MemoryReading.now()

        let report = Report(results: results, usedCeilings: ceilings != nil || memory, judgesRatios: !quick)
        let (table, allMet, judged) = report.render()
        var out = "Machine: \(facts.cores) cores, \(facts.cpuModel), \(facts.memory) memory. "
        out += "Command: `\(commandLine())`"
        if rounds > 1 { out += " (the median of \(rounds) rounds for ours and the ceilings alike)" }
        out += ".\n"
        out += placement.map { "Placement: \($0).\n" } ?? "Placement: left to the scheduler.\n"
        out += "\n" + table + "\n"
        print(out)
        let clusterMet = cluster ? try await compareCluster(redisN: redisN, temp: temp, rounds: rounds, logger: logger) : true
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

    /// What the passes run on, set up once for the whole run.
    private struct Workload {
        var sqliteKeys: [String]
        var sqliteBatches: [[String]]
        var redisKeys: [String]
        var redisBatches: [[String]]
        var warmUp: [String]
        var temp: String
        var redis: RedisServer?
        var ceilings: Ceilings?
        var protocolClient: ProtocolClient?
        var streamCeiling: StreamCeiling?
        var logger: Logger
    }

    /// One pass of one kind of path: a C ceiling's (new keys, then the same keys again) or ours
    /// (the same, plus with `--breakdown` the store without the consumer).
    private enum Side {
        case sqliteCeiling(Ceilings.SQLiteMode)
        case redisCeiling(batch: Int)
        case sqliteOurs(Group)
        case redisOurs(Group)
        case streamCeiling
        case streamOurs(StreamStore, RedisStreamConsumer.ProcessingMode)
    }

    private func run(_ side: Side, _ workload: Workload, round: Int, into results: inout RunResults) async throws {
        switch side {
        case .sqliteCeiling(let mode):
            guard let ceilings = workload.ceilings else { return }
            progress("ceiling: sqlite \(mode.rawValue), N=\(workload.sqliteKeys.count)")
            let output = try ceilings.runSQLite(mode, n: workload.sqliteKeys.count)
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
        case .redisCeiling(let batch):
            guard let ceilings = workload.ceilings, let redis = workload.redis else { return }
            let n = workload.redisKeys.count
            try redis.flushAll()
            progress("ceiling: redis batch \(batch), N=\(n)")
            let output = try ceilings.runRedis(host: redis.host, port: redis.port, n: n, batch: batch)
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
            if let protocolClient = workload.protocolClient {
                // Right after the ceiling, so the two share the machine's mood.
                try redis.flushAll()
                progress("C client of our protocol: redis batch \(batch), N=\(n)")
                let output = try protocolClient.run(host: redis.host, port: redis.port, n: n, batch: batch)
                FileHandle.standardError.write(Data(output.utf8))
                results.protocolClient.take(output)
            }
        case .sqliteOurs(let group):
            try await runSQLite(group, workload, round: round, into: &results)
        case .redisOurs(let group):
            guard let redis = workload.redis else { return }
            try await runRedis(group, workload, redis: redis, into: &results)
        case .streamCeiling:
            guard let streamCeiling = workload.streamCeiling, let redis = workload.redis else { return }
            try redis.flushAll()
            progress("ceiling: stream, XREADGROUP COUNT 100 + XACK, N=\(workload.redisKeys.count)")
            let output = try streamCeiling.run(host: redis.host, port: redis.port, n: workload.redisKeys.count)
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
        case .streamOurs(let store, let mode):
            guard let redis = workload.redis else { return }
            try await runStream(store, mode, workload, redis: redis, round: round, into: &results)
        }
    }

    /// Our pass of one stream path: a stream of fresh entries on an emptied server, consumed by a
    /// RedisStreamConsumer whose dedup records go to a fresh SQLite file or the same Redis.
    private func runStream(
        _ storeKind: StreamStore, _ mode: RedisStreamConsumer.ProcessingMode, _ workload: Workload, redis: RedisServer,
        round: Int, into results: inout RunResults
    ) async throws {
        let logger = workload.logger
        let n = workload.redisKeys.count
        try redis.flushAll()
        let endpoint = try RedisEndpoint(url: redis.url)
        try await fillStream(endpoint, stream: "bench-stream", count: n, logger: logger)
        let path = "\(workload.temp)/stream-\(mode)-\(round).sqlite"
        var redisStore: RedisDedupStore?
        let consumer: IdempotentConsumer
        switch storeKind {
        case .sqlite:
            consumer = try sqliteConsumer(path: path, logger: logger)
        case .redis:
            let (store, redisConsumer) = try redisConsumer(redis, logger: logger)
            redisStore = store
            consumer = redisConsumer
        }
        let benchPath: BenchPath
        switch (storeKind, mode) {
        case (.sqlite, .oneByOne): benchPath = .streamSQLiteSingle
        case (.sqlite, .batch): benchPath = .streamSQLiteBatch
        case (.redis, .oneByOne): benchPath = .streamRedisSingle
        case (.redis, .batch): benchPath = .streamRedisBatch
        }
        let measurement = try await measureStream(endpoint, stream: "bench-stream", consumer: consumer, mode: mode, count: n, logger: logger)
        record(benchPath, measurement, into: &results)
        await redisStore?.close()
        if storeKind == .sqlite { try removeSQLite(path) }
        try redis.flushAll()
    }

    /// Our SQLite pass of one kind of path, on a fresh file as the ceiling's: new keys, then the
    /// same keys again.
    private func runSQLite(_ group: Group, _ workload: Workload, round: Int, into results: inout RunResults) async throws {
        let logger = workload.logger
        let path = "\(workload.temp)/ours-\(group.rawValue)-\(round).sqlite"
        switch group {
        case .single:
            let consumer = try sqliteConsumer(path: path, logger: logger)
            _ = try await measureSingle(consumer, keys: workload.warmUp, expect: .applied)
            try await record(.sqliteSingle, measureSingle(consumer, keys: workload.sqliteKeys, expect: .applied), into: &results)
            try await record(.sqliteSingleDuplicate, measureSingle(consumer, keys: workload.sqliteKeys, expect: .duplicate), into: &results)
        case .batch:
            let consumer = try sqliteConsumer(path: path, logger: logger)
            _ = try await measureBatches(consumer, batches: [workload.warmUp], expect: .applied)
            try await record(.sqliteBatch, measureBatches(consumer, batches: workload.sqliteBatches, expect: .applied), into: &results)
            try await record(.sqliteBatchDuplicate, measureBatches(consumer, batches: workload.sqliteBatches, expect: .duplicate), into: &results)
        case .concurrent, .stream:
            return
        }
        try removeSQLite(path)
        guard breakdown else { return }
        let storePath = "\(workload.temp)/store-\(group.rawValue)-\(round).sqlite"
        try removeSQLite(storePath)
        let store = try SQLiteDedupStore(path: storePath, configuration: sqliteConfiguration, logger: logger)
        if group == .single {
            _ = try await measureStoreSingle(store, keys: workload.warmUp, expect: .applied)
            try await recordStore(.sqliteSingle, measureStoreSingle(store, keys: workload.sqliteKeys, expect: .applied), into: &results)
            try await recordStore(.sqliteSingleDuplicate, measureStoreSingle(store, keys: workload.sqliteKeys, expect: .duplicate), into: &results)
        } else {
            _ = try await measureStoreBatches(store, batches: [workload.warmUp], expect: .applied)
            try await recordStore(.sqliteBatch, measureStoreBatches(store, batches: workload.sqliteBatches, expect: .applied), into: &results)
            try await recordStore(.sqliteBatchDuplicate, measureStoreBatches(store, batches: workload.sqliteBatches, expect: .duplicate), into: &results)
        }
        try removeSQLite(storePath)
    }

    /// Our Redis pass of one kind of path on an emptied server: new keys, then the same keys again
    /// (8 tasks: new keys only).
    private func runRedis(_ group: Group, _ workload: Workload, redis: RedisServer, into results: inout RunResults) async throws {
        let logger = workload.logger
        let keys = workload.redisKeys
        let batches = workload.redisBatches
        try redis.flushAll()
        let (store, consumer) = try redisConsumer(redis, logger: logger)
        switch group {
        case .single:
            _ = try await measureSingle(consumer, keys: workload.warmUp, expect: .applied)
            try await record(.redisSingle, measureSingle(consumer, keys: keys, expect: .applied), into: &results)
            try await record(.redisSingleDuplicate, measureSingle(consumer, keys: keys, expect: .duplicate), into: &results)
        case .batch:
            _ = try await measureBatches(consumer, batches: [workload.warmUp], expect: .applied)
            try await record(.redisBatch, measureBatches(consumer, batches: batches, expect: .applied), into: &results)
            try await record(.redisBatchDuplicate, measureBatches(consumer, batches: batches, expect: .duplicate), into: &results)
        case .concurrent:
            _ = try await measureConcurrent(consumer, keys: workload.warmUp, tasks: tasks)
            try await record(.redisConcurrent, measureConcurrent(consumer, keys: keys, tasks: tasks), into: &results)
        case .stream:
            break
        }
        await store.close()
        if breakdown && (group == .single || group == .batch) {
            try redis.flushAll()
            let store = try RedisDedupStore(url: redis.url, logger: logger)
            if group == .single {
                _ = try await measureStoreSingle(store, keys: workload.warmUp, expect: .applied)
                try await recordStore(.redisSingle, measureStoreSingle(store, keys: keys, expect: .applied), into: &results)
                try await recordStore(.redisSingleDuplicate, measureStoreSingle(store, keys: keys, expect: .duplicate), into: &results)
            } else {
                _ = try await measureStoreBatches(store, batches: [workload.warmUp], expect: .applied)
                try await recordStore(.redisBatch, measureStoreBatches(store, batches: batches, expect: .applied), into: &results)
                try await recordStore(.redisBatchDuplicate, measureStoreBatches(store, batches: batches, expect: .duplicate), into: &results)
            }
            await store.close()
        }
        try redis.flushAll()
    }

    private func record(_ path: BenchPath, _ measurement: Measurement, into results: inout RunResults) {
        var line = "  ours: \(path.title): \(thousands(measurement.rate)) msgs/s"
        if let latency = measurement.latency {
            line += String(format: ", p50 %.0f µs, p99 %.0f µs", latency.p50, latency.p99)
        }
        progress(line)
        results.keep(path, measurement)
    }

    private func recordStore(_ path: BenchPath, _ measurement: Measurement, into results: inout RunResults) {
        progress("  store only: \(path.title): \(thousands(measurement.rate)) msgs/s")
        results.keepStoreOnly(path, measurement)
    }

    private func sqliteConsumer(path: String, logger: Logger) throws -> IdempotentConsumer {
        try removeSQLite(path)
        let store = try SQLiteDedupStore(path: path, configuration: sqliteConfiguration, logger: logger)
        return try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
    }

    private func redisConsumer(_ redis: RedisServer, logger: Logger) throws -> (RedisDedupStore, IdempotentConsumer) {
        let store = try RedisDedupStore(url: redis.url, logger: logger)
        return (store, try IdempotentConsumer(store: store, namespace: "bench", logger: logger))
    }
}

/// The ceiling's pragmas: WAL (always, in this store) and synchronous=NORMAL.
let sqliteConfiguration = SQLiteDedupStore.Configuration(synchronous: .normal)

/// Deletes an SQLite file and its WAL and shared-memory companions.
func removeSQLite(_ path: String) throws {
    for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
        try FileManager.default.removeItem(atPath: path + suffix)
    }
}
