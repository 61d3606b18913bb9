// The growth group: what claims cost once a store holds millions of records, what a purge of
// millions of expired records costs the claims beside it, and what a record costs Redis in memory.
// The stores are filled fast by the C programs of Benchmarks/ (sqlite_fill.c, redis_fill.c); the
// SQLite fills are cached under .build/benchmarks/growth/, keyed by the schema version, so a second
// run does not fill again.
import Dedup
import DedupRedis
import DedupSQLite
import Foundation
import Logging
import Synchronization

/// How big the growth group's stores are, and how long its passes.
struct GrowthSizes {
    /// Completed records in the grown SQLite store.
    var sqliteRecords: Int
    /// Expired records the purge deletes.
    var purgeRecords: Int
    /// Completed records on the grown Redis server.
    var redisKeys: Int
    /// Records written through the Redis store for the memory row.
    var redisMemoryRecords: Int
    /// Messages per SQLite pass, as on the other SQLite paths.
    var passMessages: Int
    /// Messages per Redis pass, as on the other Redis paths.
    var redisPassMessages: Int
    var rounds: Int
}

/// The growth group's passes, run after the other paths' rounds, with rounds of their own.
struct Growth {
    let sizes: GrowthSizes
    let programs: CPrograms
    let temp: String
    let logger: Logger
    /// The benchmark's own redis-server: the empty server the grown one is compared with.
    let redis: RedisServer?
    /// The redis-server to start for the grown server; `nil` when the run uses a server it did not
    /// start (`--use-redis-port`), which then skips the Redis rows.
    let redisExecutable: String?
    let placement: CPUPlacement?

    /// Records deleted per purge transaction: `SQLitePurgeService`'s default batch.
    static let purgeBatchSize = 1000
    /// Bump when sqlite_fill.c writes different rows, so cached fills are not reused.
    static let fillFormat = 1

    private static let liveSeed: UInt64 = 0x6120_0000_0000_0001
    private static let expiredSeed: UInt64 = 0x6120_0000_0000_0002
    private static let redisSeed: UInt64 = 0x6120_0000_0000_0003

    /// Fresh keys for one round, none of them among the filled ones (another seed).
    private struct RoundKeys {
        var single: [String]
        var batch: [String]
        var warmUpSingle: [String]
        var warmUpBatch: [String]

        init(round: Int, count: Int) {
            var generator = KeyGenerator(seed: 0x6120_0001_0000_0000 &+ UInt64(round))
            single = generator.keys(count)
            batch = generator.keys(count)
            warmUpSingle = generator.keys(100)
            warmUpBatch = generator.keys(100)
        }
    }

    // MARK: SQLite

    /// The grown store's rows, then the purge beside a consumer.
    func runSQLite(into results: inout RunResults) async throws {
        let filled = try cachedStore(.live, records: sizes.sqliteRecords)
        results.growth.sqliteFile = StoreFileSize(
            records: sizes.sqliteRecords,
            bytes: try fileSize(filled.path),
            fillSeconds: filled.fillSeconds
        )
        results.growth.sqliteRecords = sizes.sqliteRecords
        let grownPath = temp + "/grown.sqlite"
        progress("growth: copying the store of \(thousands(Double(sizes.sqliteRecords))) records")
        try copyToDisk(filled.path, grownPath)
        let grownStore = try SQLiteDedupStore(path: grownPath, configuration: sqliteConfiguration, logger: logger)
        let grown = try IdempotentConsumer(store: grownStore, namespace: "bench", logger: logger)
        try await expectFilled(grown, seed: Self.liveSeed)
        let storeSQL = try programs.executable(source: "Benchmarks/sqlite_store_sql.c", library: "sqlite3")

        for round in 1...sizes.rounds {
            let keys = RoundKeys(round: round, count: sizes.passMessages)
            // The empty store's pass and the grown store's pass of a path side by side, who goes
            // first alternating by round, as the ceilings' passes are run beside ours.
            for grownSide in round % 2 == 1 ? [false, true] : [true, false] {
                let consumer =
                    grownSide
                    ? grown : try sqliteConsumer(path: temp + "/grown-reference-single.sqlite", logger: logger)
                try await passes(.single, consumer, keys, grown: grownSide, into: &results)
            }
            for grownSide in round % 2 == 1 ? [false, true] : [true, false] {
                let consumer =
                    grownSide ? grown : try sqliteConsumer(path: temp + "/grown-reference-batch.sqlite", logger: logger)
                try await passes(.batch, consumer, keys, grown: grownSide, into: &results)
            }
            // The store's SQL from a plain C client on both files: what the grown file costs SQLite.
            for mode in ["single", "batch"] {
                for grownSide in round % 2 == 1 ? [false, true] : [true, false] {
                    let path = grownSide ? grownPath : try emptyStore(temp + "/grown-reference-c.sqlite")
                    let seed = 0x6120_0003_0000_0000 &+ UInt64(round * 2 + (mode == "batch" ? 1 : 0))
                    let output = try runProgram(storeSQL, [path, "\(sizes.passMessages)", "\(seed)", mode])
                    FileHandle.standardError.write(
                        Data(((grownSide ? "  grown: " : "  empty (reference): ") + output).utf8)
                    )
                    results.growth.plainClients.take(output, grown: grownSide)
                }
            }
        }
        grownStore.close()
        for name in ["grown", "grown-reference-single", "grown-reference-batch", "grown-reference-c"] {
            try removeSQLite("\(temp)/\(name).sqlite")
        }
        if sizes.purgeRecords > 0 { results.growth.purge = try await purgeBesideConsumer() }
    }

    private typealias Group = DedupBench.Group

    /// One side of a grown path's pair: warm-up messages, then the round's new keys and the same
    /// keys again, one at a time (`single`) or in batches of 100 (`batch`).
    private func passes(
        _ kind: Group,
        _ consumer: IdempotentConsumer,
        _ keys: RoundKeys,
        redis: Bool = false,
        grown: Bool,
        into results: inout RunResults
    ) async throws {
        if kind == .single {
            _ = try await measureSingle(consumer, keys: keys.warmUpSingle, expect: .applied)
            let new = try await measureSingle(consumer, keys: keys.single, expect: .applied)
            let duplicate = try await measureSingle(consumer, keys: keys.single, expect: .duplicate)
            keep(redis ? .grownRedisSingle : .grownSQLiteSingle, new, grown: grown, into: &results)
            keep(
                redis ? .grownRedisSingleDuplicate : .grownSQLiteSingleDuplicate,
                duplicate,
                grown: grown,
                into: &results
            )
        } else {
            let batches = batched(keys.batch, size: 100)
            _ = try await measureBatches(consumer, batches: [keys.warmUpBatch], expect: .applied)
            let new = try await measureBatches(consumer, batches: batches, expect: .applied)
            let duplicate = try await measureBatches(consumer, batches: batches, expect: .duplicate)
            keep(redis ? .grownRedisBatch : .grownSQLiteBatch, new, grown: grown, into: &results)
            keep(
                redis ? .grownRedisBatchDuplicate : .grownSQLiteBatchDuplicate,
                duplicate,
                grown: grown,
                into: &results
            )
        }
    }

    private func keep(_ path: BenchPath, _ measurement: Measurement, grown: Bool, into results: inout RunResults) {
        progress("  \(grown ? "grown" : "empty (reference)"): \(path.title): \(describe(measurement))")
        if grown { results.keep(path, measurement) } else { results.keepReference(path, measurement) }
    }

    /// The first keys the fill wrote are there, completed: the filled rows are records the store
    /// reads as its own.
    private func expectFilled(_ consumer: IdempotentConsumer, seed: UInt64) async throws {
        var generator = KeyGenerator(seed: seed)
        for key in generator.keys(3) {
            let outcome = try await consumer.process(key: key) { _ in }
            guard Expected.duplicate.matches(outcome) else {
                throw BenchError("a filled record \(key) came out \(outcome), not a duplicate")
            }
        }
    }

    /// A purge of the expired store's records through `SQLitePurgeService` (`purgeExpired(limit:)`
    /// in transactions of ``purgeBatchSize``), while a consumer on the same store claims new keys
    /// one at a time; each claim is timed.
    private func purgeBesideConsumer() async throws -> PurgeResult {
        let filled = try cachedStore(.expired, records: sizes.purgeRecords)
        let path = temp + "/purge.sqlite"
        progress("growth: copying the store of \(thousands(Double(sizes.purgeRecords))) expired records")
        try copyToDisk(filled.path, path)
        let store = try SQLiteDedupStore(path: path, configuration: sqliteConfiguration, logger: logger)
        let consumer = try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
        var generator = KeyGenerator(seed: 0x6120_0002_0000_0000)
        _ = try await measureSingle(consumer, keys: generator.keys(100), expect: .applied)

        progress("growth: purging \(thousands(Double(sizes.purgeRecords))) expired records beside a consumer")
        let service = SQLitePurgeService(store: store, batchSize: Self.purgeBatchSize, logger: logger)
        let finished = PurgeFinished()
        let clock = ContinuousClock()
        let started = clock.now
        let purge = Task {
            let pass = await service.purgeOnce()
            let elapsed = clock.now - started
            finished.value.store(true, ordering: .releasing)
            return (pass, elapsed)
        }
        var latencies = LatencyRecorder(capacity: max(100_000, sizes.purgeRecords))
        var claims = 0
        var wrong = 0
        while !finished.value.load(ordering: .acquiring) {
            let key = generator.key()
            let start = MonotonicInstant.now
            let outcome = try await consumer.process(key: key) { _ in }
            latencies.record(MonotonicInstant.now.nanoseconds(since: start))
            claims += 1
            if !Expected.applied.matches(outcome) { wrong += 1 }
        }
        let claimsElapsed = clock.now - started
        let (pass, elapsed) = await purge.value
        store.close()
        try removeSQLite(path)
        if let error = pass.error { throw BenchError("the purge failed: \(error)") }
        guard wrong == 0 else {
            throw BenchError("\(wrong) of \(claims) claims beside the purge did not come out applied")
        }
        guard pass.deleted == sizes.purgeRecords else {
            throw BenchError("the purge deleted \(pass.deleted) of \(sizes.purgeRecords) expired records")
        }
        let claimsMeasurement = Measurement(
            messages: claims,
            seconds: claimsElapsed.seconds,
            latency: latencies.percentiles()
        )
        progress(
            "  purge: \(thousands(Double(pass.deleted))) records in \(String(format: "%.1f", elapsed.seconds)) s; claims beside it: \(describe(claimsMeasurement))"
        )
        return PurgeResult(
            records: sizes.purgeRecords,
            deleted: pass.deleted,
            seconds: elapsed.seconds,
            batchSize: Self.purgeBatchSize,
            claims: claimsMeasurement
        )
    }

    /// Which records a fill writes.
    private enum FillKind: String {
        /// Completed, kept for years.
        case live
        /// Completed and expired, to be purged.
        case expired
    }

    /// A store holding `records` records of `kind`, filled by sqlite_fill.c into the schema the
    /// store creates, kept under .build/benchmarks/growth/ for the next run.
    private func cachedStore(_ kind: FillKind, records: Int) throws -> (path: String, fillSeconds: Double?) {
        let schema = SQLiteMigration.all.map(\.version).max() ?? 0
        let directory = programs.outputDirectory.appendingPathComponent("growth").path
        let path = "\(directory)/sqlite-schema\(schema)-fill\(Self.fillFormat)-\(kind.rawValue)-\(records).sqlite"
        if FileManager.default.fileExists(atPath: path) {
            progress("growth: using the cached \(path)")
            return (path, nil)
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fill = try programs.executable(source: "Benchmarks/sqlite_fill.c", library: "sqlite3")
        // Filled under a name of this process's own, then renamed: a run never uses a half-filled file.
        let partial = try emptyStore(path + ".\(getpid()).partial")
        progress("growth: filling \(path) with \(thousands(Double(records))) \(kind.rawValue) records")
        let seed = kind == .live ? Self.liveSeed : Self.expiredSeed
        let started = ContinuousClock.now
        let output = try runProgram(
            fill,
            [partial, "\(records)", "\(seed)", kind.rawValue, "\(Int64(Date().timeIntervalSince1970 * 1000))"]
        )
        let seconds = (ContinuousClock.now - started).seconds
        FileHandle.standardError.write(Data(output.utf8))
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: partial + suffix) }
        guard rename(partial, path) == 0 else {
            throw BenchError("cannot move the filled store to \(path): errno \(errno)")
        }
        return (path, seconds)
    }

    /// A fresh file with the store's schema and no record.
    private func emptyStore(_ path: String) throws -> String {
        try SQLiteDedupStore(path: try freshFile(path), configuration: sqliteConfiguration, logger: logger).close()
        return path
    }

    /// Copies a filled store and waits until the copy is on disk: otherwise the store's first
    /// checkpoint (which syncs the file) would wait for the kernel to write out the whole copy,
    /// and the first pass would pay for the copy.
    private func copyToDisk(_ source: String, _ destination: String) throws {
        try FileManager.default.copyItem(atPath: source, toPath: try freshFile(destination))
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: destination))
        try handle.synchronize()
        try handle.close()
    }

    private func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
    }

    // MARK: Redis

    /// On a redis-server of its own: the memory row on the empty server, then the fill and the
    /// grown server's rows against the benchmark's empty server.
    func runRedis(into results: inout RunResults) async throws {
        guard let redis, let redisExecutable else {
            progress(
                "growth: the Redis rows need a redis-server of the benchmark's own (not --use-redis-port): skipped"
            )
            return
        }
        let grown = try RedisServer(executable: redisExecutable, directory: temp + "/redis-grown")
        defer { grown.stop() }
        if let placement, let processID = grown.processID { try placement.pinServer(processID: processID) }
        progress("growth: a second redis-server on 127.0.0.1:\(grown.port)")
        if sizes.redisMemoryRecords > 0 {
            results.growth.redisMemory = try await memoryPerRecord(grown, records: sizes.redisMemoryRecords)
            try grown.flushAll()
        }
        results.growth.redisFill = try await fill(grown, keys: sizes.redisKeys)
        do {
            let (store, consumer) = try redisConsumer(grown, logger: logger)
            try await expectFilled(consumer, seed: Self.redisSeed)
            await store.close()
        }

        let ceiling = try programs.executable(source: "Benchmarks/Ceilings/redis_ceiling.c", library: "hiredis")
        for round in 1...sizes.rounds {
            try measureRoundTrip(redis, into: &results)
            let keys = RoundKeys(round: round, count: sizes.redisPassMessages)
            for kind in [Group.single, .batch] {
                for grownSide in round % 2 == 1 ? [false, true] : [true, false] {
                    if !grownSide { try redis.flushAll() }
                    let (store, consumer) = try redisConsumer(grownSide ? grown : redis, logger: logger)
                    try await passes(kind, consumer, keys, redis: true, grown: grownSide, into: &results)
                    await store.close()
                }
            }
            // The Redis ceiling on both servers: what the keys present cost the server itself.
            for batch in [1, 100] {
                for grownSide in round % 2 == 1 ? [false, true] : [true, false] {
                    let server = grownSide ? grown : redis
                    if !grownSide { try redis.flushAll() }
                    let output = try runProgram(
                        ceiling,
                        [server.host, "\(server.port)", "\(sizes.redisPassMessages)", "\(batch)"]
                    )
                    FileHandle.standardError.write(
                        Data(((grownSide ? "  grown: " : "  empty (reference): ") + output).utf8)
                    )
                    results.growth.plainClients.take(output, grown: grownSide)
                }
            }
        }
        try redis.flushAll()
    }

    /// Writes `records` completed records through the store's batch claims and completions, then
    /// the same key names as bare keys holding one byte with the same time to live, reading
    /// `used_memory` around each (`RedisMemoryFootprint`, databases 0 to 2 of an empty server): what
    /// a completed record costs the server, against the least a key of that name can cost.
    func memoryPerRecord(_ server: RedisServer, records: Int) async throws -> RedisMemoryRow {
        progress("growth: writing \(thousands(Double(records))) records through the Redis store for the memory row")
        let endpoint = try RedisEndpoint(url: "redis://\(server.host):\(server.port)/0")
        let footprint = try await RedisMemoryFootprint.measure(endpoint: endpoint, count: records)
        progress("  Redis memory: \(footprint)")
        return RedisMemoryRow(
            records: records,
            recordBytes: footprint.recordBytes,
            bareKeyBytes: footprint.bareKeyBytes,
            sampleValue: String(decoding: footprint.sampleValue, as: UTF8.self)
        )
    }

    /// Fills an empty server with `keys` completed records, copies of one the store itself wrote
    /// (its value and its time to live), by redis_fill.c.
    private func fill(_ server: RedisServer, keys: Int) async throws -> RedisFill {
        let templateKey = "growth-template"
        let (store, consumer) = try redisConsumer(server, logger: logger)
        guard Expected.applied.matches(try await consumer.process(key: templateKey) { _ in }) else {
            throw BenchError("the template record was not applied")
        }
        await store.close()
        let control = try ControlConnection(host: server.host, port: server.port)
        guard try control.keyCount() == 1, let keyBytes = try control.call(["RANDOMKEY"]) else {
            throw BenchError("the template record is not the server's only key")
        }
        let redisKey = String(decoding: keyBytes, as: UTF8.self)
        guard redisKey.hasSuffix(templateKey),
            try control.call(["TYPE", redisKey]).map({ String(decoding: $0, as: UTF8.self) }) == "string",
            let value = try control.call(["GET", redisKey]),
            let ttl = try control.call(["PTTL", redisKey]).map({ String(decoding: $0, as: UTF8.self) })
        else {
            throw BenchError(
                "the store's record \(redisKey) is not one string key with a time to live: redis_fill.c no longer writes what the store does"
            )
        }
        let prefix = String(redisKey.dropLast(templateKey.count))
        let valueFile = temp + "/template-value"
        try Data(value).write(to: URL(fileURLWithPath: valueFile))
        _ = try control.call(["DEL", redisKey])
        let program = try programs.executable(source: "Benchmarks/redis_fill.c", library: "hiredis")
        progress("growth: filling the second redis-server with \(thousands(Double(keys))) records")
        let started = ContinuousClock.now
        let output = try runProgram(
            program,
            [server.host, "\(server.port)", "\(keys)", "\(Self.redisSeed)", prefix, valueFile, ttl]
        )
        let seconds = (ContinuousClock.now - started).seconds
        FileHandle.standardError.write(Data(output.utf8))
        guard try control.keyCount() == keys else {
            throw BenchError("the fill left \(try control.keyCount()) keys, not \(keys)")
        }
        return RedisFill(keys: keys, usedMemory: try control.usedMemory(), fillSeconds: seconds)
    }
}

/// Set once the purge beside the consumer has finished.
private final class PurgeFinished: Sendable {
    let value = Atomic<Bool>(false)
}
