// The passes of one round: a path's C ceiling (or the C client of our protocol) and ours, on the
// stores the run set up.
import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import Foundation
import Logging

extension DedupBench {
    /// What the passes run on, set up once for the whole run.
    struct Workload {
        var sqliteKeys: [String]
        var sqliteBatches: [[String]]
        var redisKeys: [String]
        var redisBatches: [[String]]
        var warmUp: [String]
        var temp: String
        var postgresKeys: [String]
        var redis: RedisServer?
        var postgres: PostgresBench?
        var ceilings: Ceilings?
        var protocolClient: ProtocolClient?
        var streamCeiling: StreamCeiling?
        var logger: Logger
    }

    /// One pass of one kind of path: a C ceiling's (new keys, then the same keys again) or ours
    /// (the same, plus with `--breakdown` the store without the consumer).
    enum Side {
        case sqliteCeiling(Ceilings.SQLiteMode)
        case redisCeiling(batch: Int, inFlight: Bool = false)
        case sqliteOurs(Group)
        case redisOurs(Group)
        case streamCeiling
        case streamOurs(StreamStore, RedisStreamConsumer.ProcessingMode)
        /// The C ceiling over libpq, then the bare postgres-nio loop.
        case postgresReferences(PostgresBench.Mode)
        case postgresOurs(PostgresBench.Mode)

        var isRedis: Bool {
            switch self {
            case .redisCeiling, .redisOurs, .streamCeiling, .streamOurs: return true
            case .sqliteCeiling, .sqliteOurs, .postgresReferences, .postgresOurs: return false
            }
        }
    }

    func run(_ side: Side, _ workload: Workload, round: Int, into results: inout RunResults) async throws {
        switch side {
        case .sqliteCeiling(let mode):
            guard let ceilings = workload.ceilings else { return }
            progress("ceiling: sqlite \(mode.rawValue), N=\(workload.sqliteKeys.count)")
            let output = try ceilings.runSQLite(mode, n: workload.sqliteKeys.count)
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
        case .redisCeiling(let batch, let inFlight):
            guard let ceilings = workload.ceilings, let redis = workload.redis else { return }
            let n = workload.redisKeys.count
            try redis.flushAll()
            progress("ceiling: redis \(inFlight ? "in flight" : "batch") \(batch), N=\(n)")
            let output = try ceilings.runRedis(
                host: redis.host,
                port: redis.port,
                n: n,
                batch: batch,
                inFlight: inFlight
            )
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
            if let protocolClient = workload.protocolClient, !inFlight {
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
        case .postgresReferences(let mode):
            try await runPostgresReferences(mode, workload, into: &results)
        case .postgresOurs(let mode):
            try await runPostgres(mode, workload, into: &results)
        }
    }

    /// Our pass of one stream path: a stream of fresh entries on an emptied server, consumed by a
    /// RedisStreamConsumer whose dedup records go to a fresh SQLite file or the same Redis.
    func runStream(
        _ storeKind: StreamStore,
        _ mode: RedisStreamConsumer.ProcessingMode,
        _ workload: Workload,
        redis: RedisServer,
        round: Int,
        into results: inout RunResults
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
        let measurement = try await measureStream(
            endpoint,
            stream: "bench-stream",
            consumer: consumer,
            mode: mode,
            count: n,
            logger: logger
        )
        record(benchPath, measurement, into: &results)
        await redisStore?.close()
        if storeKind == .sqlite { try removeSQLite(path) }
        try redis.flushAll()
    }

    /// Our SQLite pass of one kind of path, on a fresh file as the ceiling's: new keys, then the
    /// same keys again.
    func runSQLite(_ group: Group, _ workload: Workload, round: Int, into results: inout RunResults) async throws {
        let logger = workload.logger
        let path = "\(workload.temp)/ours-\(group.rawValue)-\(round).sqlite"
        switch group {
        case .single:
            let consumer = try sqliteConsumer(path: path, logger: logger)
            _ = try await measureSingle(consumer, keys: workload.warmUp, expect: .applied)
            try await record(
                .sqliteSingle,
                measureSingle(consumer, keys: workload.sqliteKeys, expect: .applied),
                into: &results
            )
            try await record(
                .sqliteSingleDuplicate,
                measureSingle(consumer, keys: workload.sqliteKeys, expect: .duplicate),
                into: &results
            )
        case .batch:
            let consumer = try sqliteConsumer(path: path, logger: logger)
            _ = try await measureBatches(consumer, batches: [workload.warmUp], expect: .applied)
            try await record(
                .sqliteBatch,
                measureBatches(consumer, batches: workload.sqliteBatches, expect: .applied),
                into: &results
            )
            try await record(
                .sqliteBatchDuplicate,
                measureBatches(consumer, batches: workload.sqliteBatches, expect: .duplicate),
                into: &results
            )
        case .txn:
            let store = try SQLiteDedupStore(
                path: try freshFile(path),
                configuration: sqliteConfiguration,
                logger: logger
            )
            try await createEffectTable(store)
            let consumer = try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
            _ = try await measureTransactional(consumer, keys: workload.warmUp, expect: .applied)
            try await record(
                .sqliteTxn,
                measureTransactional(consumer, keys: workload.sqliteKeys, expect: .applied),
                into: &results
            )
            try await record(
                .sqliteTxnDuplicate,
                measureTransactional(consumer, keys: workload.sqliteKeys, expect: .duplicate),
                into: &results
            )
            // Every new key wrote its effect row, no duplicate did.
            let effects = try await effectRowCount(store)
            guard effects == workload.warmUp.count + workload.sqliteKeys.count else {
                throw BenchError(
                    "the transactional pass left \(effects) effect rows for \(workload.warmUp.count + workload.sqliteKeys.count) new keys"
                )
            }
            store.close()
        case .concurrent, .stream, .growth:
            return
        }
        try removeSQLite(path)
        guard breakdown, group == .single || group == .batch else { return }
        let storePath = "\(workload.temp)/store-\(group.rawValue)-\(round).sqlite"
        try removeSQLite(storePath)
        let store = try SQLiteDedupStore(path: storePath, configuration: sqliteConfiguration, logger: logger)
        if group == .single {
            _ = try await measureStoreSingle(store, keys: workload.warmUp, expect: .applied)
            try await recordStore(
                .sqliteSingle,
                measureStoreSingle(store, keys: workload.sqliteKeys, expect: .applied),
                into: &results
            )
            try await recordStore(
                .sqliteSingleDuplicate,
                measureStoreSingle(store, keys: workload.sqliteKeys, expect: .duplicate),
                into: &results
            )
        } else {
            _ = try await measureStoreBatches(store, batches: [workload.warmUp], expect: .applied)
            try await recordStore(
                .sqliteBatch,
                measureStoreBatches(store, batches: workload.sqliteBatches, expect: .applied),
                into: &results
            )
            try await recordStore(
                .sqliteBatchDuplicate,
                measureStoreBatches(store, batches: workload.sqliteBatches, expect: .duplicate),
                into: &results
            )
        }
        try removeSQLite(storePath)
    }

    /// Our Redis pass of one kind of path on an emptied server: new keys, then the same keys again
    /// (8 tasks: new keys only).
    func runRedis(_ group: Group, _ workload: Workload, redis: RedisServer, into results: inout RunResults) async throws
    {
        let logger = workload.logger
        let keys = workload.redisKeys
        let batches = workload.redisBatches
        try redis.flushAll()
        let (store, consumer) = try redisConsumer(redis, logger: logger)
        // Each timed pass also reads what it cost redis-server.
        switch group {
        case .single:
            _ = try await measureSingle(consumer, keys: workload.warmUp, expect: .applied)
            try await record(
                .redisSingle,
                withServerCPU(redis) { try await measureSingle(consumer, keys: keys, expect: .applied) },
                into: &results
            )
            try await record(
                .redisSingleDuplicate,
                withServerCPU(redis) { try await measureSingle(consumer, keys: keys, expect: .duplicate) },
                into: &results
            )
        case .batch:
            _ = try await measureBatches(consumer, batches: [workload.warmUp], expect: .applied)
            try await record(
                .redisBatch,
                withServerCPU(redis) { try await measureBatches(consumer, batches: batches, expect: .applied) },
                into: &results
            )
            try await record(
                .redisBatchDuplicate,
                withServerCPU(redis) { try await measureBatches(consumer, batches: batches, expect: .duplicate) },
                into: &results
            )
        case .concurrent:
            _ = try await measureConcurrent(consumer, keys: workload.warmUp, tasks: tasks)
            try await record(
                .redisConcurrent,
                withServerCPU(redis) { try await measureConcurrent(consumer, keys: keys, tasks: tasks) },
                into: &results
            )
            // The same keys again on an emptied server, the tasks on the store's executor.
            try redis.flushAll()
            let executor = store.taskExecutor
            _ = try await measureConcurrent(consumer, keys: workload.warmUp, tasks: tasks, executor: executor)
            try await record(
                .redisConcurrentOnStoreExecutor,
                withServerCPU(redis) {
                    try await measureConcurrent(consumer, keys: keys, tasks: tasks, executor: executor)
                },
                into: &results
            )
        case .stream, .txn, .growth:
            break
        }
        await store.close()
        if breakdown && (group == .single || group == .batch) {
            try redis.flushAll()
            let store = try RedisDedupStore(url: redis.url, logger: logger)
            if group == .single {
                _ = try await measureStoreSingle(store, keys: workload.warmUp, expect: .applied)
                try await recordStore(
                    .redisSingle,
                    measureStoreSingle(store, keys: keys, expect: .applied),
                    into: &results
                )
                try await recordStore(
                    .redisSingleDuplicate,
                    measureStoreSingle(store, keys: keys, expect: .duplicate),
                    into: &results
                )
            } else {
                _ = try await measureStoreBatches(store, batches: [workload.warmUp], expect: .applied)
                try await recordStore(
                    .redisBatch,
                    measureStoreBatches(store, batches: batches, expect: .applied),
                    into: &results
                )
                try await recordStore(
                    .redisBatchDuplicate,
                    measureStoreBatches(store, batches: batches, expect: .duplicate),
                    into: &results
                )
            }
            await store.close()
        }
        try redis.flushAll()
    }

    func record(_ path: BenchPath, _ measurement: Measurement, into results: inout RunResults) {
        progress("  ours: \(path.title): \(describe(measurement))")
        results.keep(path, measurement)
    }

    func recordStore(_ path: BenchPath, _ measurement: Measurement, into results: inout RunResults) {
        progress("  store only: \(path.title): \(thousands(measurement.rate)) msgs/s")
        results.keepStoreOnly(path, measurement)
    }
}
