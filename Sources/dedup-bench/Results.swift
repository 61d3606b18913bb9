// Everything one run found, kept pass by pass; the report takes medians of it.
import Foundation

struct RunResults {
    /// Every pass of our paths, in the order they ran.
    private(set) var oursPasses: [BenchPath: [Measurement]] = [:]
    var ceilings = CeilingRates()
    var memory: [MemoryCheck] = []
    /// With `--breakdown`: the same paths straight to the store, without the consumer.
    private(set) var storeOnlyPasses: [BenchPath: [Measurement]] = [:]
    /// On a grown store's paths: our passes of the same path on an empty store, the reference.
    private(set) var referencePasses: [BenchPath: [Measurement]] = [:]
    /// With `--breakdown`: our Redis protocol from a plain C client (Benchmarks/redis_protocol.c).
    var protocolClient = CeilingRates()
    /// On the PostgreSQL paths: the store's statements through postgres-nio alone (no store, no consumer).
    var postgresNIO = CeilingRates()
    /// The growth group's measurements that are not passes of a path.
    var growth = GrowthResults()
    /// The median loopback round trip (PING) of each round, in microseconds.
    var roundTrips: [Double] = []
    var startMemory = MemoryReading(residentBytes: 0, peakBytes: 0)
    var endMemory = MemoryReading(residentBytes: 0, peakBytes: 0)

    /// Records a pass of one of our paths (rounds run the paths more than once).
    mutating func keep(_ path: BenchPath, _ measurement: Measurement) {
        oursPasses[path, default: []].append(measurement)
    }

    /// Records a pass of a path straight to the store.
    mutating func keepStoreOnly(_ path: BenchPath, _ measurement: Measurement) {
        storeOnlyPasses[path, default: []].append(measurement)
    }

    /// Records a reference pass of a grown store's path (ours on an empty store).
    mutating func keepReference(_ path: BenchPath, _ measurement: Measurement) {
        referencePasses[path, default: []].append(measurement)
    }

    /// What a path's rate is compared with: the C ceiling's median pass, or on a grown store our
    /// median pass on an empty one.
    func reference(_ path: BenchPath) -> Double? {
        path.isGrown ? referencePasses[path].flatMap { median($0, by: \.rate) }?.rate : ceilings.rate(path)
    }

    /// Each round's ratio of one path: our pass over the reference pass run beside it. Empty unless
    /// both sides ran the path more than once, a pass each round.
    func roundRatios(_ path: BenchPath) -> [Double] {
        let ours = oursPasses[path] ?? []
        let reference = path.isGrown ? (referencePasses[path] ?? []).map(\.rate) : ceilings.passes(of: path)
        guard ours.count > 1, ours.count == reference.count else { return [] }
        return zip(ours, reference).map { $0.rate / $1 }
    }

    /// Our median pass of each path (see ``median(_:by:)``).
    var ours: [BenchPath: Measurement] { oursPasses.compactMapValues { median($0, by: \.rate) } }

    /// The median of our passes' redis-server CPU time per message on one path, in microseconds.
    func oursServerMicroseconds(_ path: BenchPath) -> Double? {
        median((oursPasses[path] ?? []).compactMap(\.serverMicrosecondsPerMessage), by: { $0 })
    }

    /// The median pass of each path straight to the store.
    var storeOnly: [BenchPath: Measurement] { storeOnlyPasses.compactMapValues { median($0, by: \.rate) } }
}

/// The growth group's measurements besides the passes of its paths.
struct GrowthResults {
    /// The records the grown SQLite store held when its rounds began.
    var sqliteRecords: Int?
    /// The grown SQLite file as filled.
    var sqliteFile: StoreFileSize?
    /// The purge of expired records beside a consumer.
    var purge: PurgeResult?
    /// Redis memory per record, records written through the store.
    var redisMemory: RedisMemoryRow?
    /// The grown Redis server as filled.
    var redisFill: RedisFill?
    /// Plain C clients on the grown store and on an empty one: the store's SQL
    /// (Benchmarks/sqlite_store_sql.c) and the Redis ceiling (redis_ceiling.c).
    var plainClients = PlainClientRates()
}

/// The passes of the plain C clients on the grown stores and on empty ones, by the grown path they
/// stand beside.
struct PlainClientRates {
    private(set) var grown: [BenchPath: [Double]] = [:]
    private(set) var empty: [BenchPath: [Double]] = [:]

    mutating func take(_ output: String, grown onGrown: Bool) {
        for line in output.split(separator: "\n") {
            guard let parsed = CeilingLine(line), let rate = parsed.rate else { continue }
            let dup = parsed.isDuplicatePass
            let path: BenchPath
            switch (parsed.store, parsed.fields["mode"], parsed.fields["batch"]) {
            case ("sqlite", "store-single", _): path = dup ? .grownSQLiteSingleDuplicate : .grownSQLiteSingle
            case ("sqlite", "store-batch", _): path = dup ? .grownSQLiteBatchDuplicate : .grownSQLiteBatch
            case ("redis", "batch", "1"): path = dup ? .grownRedisSingleDuplicate : .grownRedisSingle
            case ("redis", "batch", "100"): path = dup ? .grownRedisBatchDuplicate : .grownRedisBatch
            default: continue
            }
            if onGrown { grown[path, default: []].append(rate) } else { empty[path, default: []].append(rate) }
        }
    }
}

/// The size of an SQLite file holding `records` records.
struct StoreFileSize {
    var records: Int
    var bytes: Int
    /// How long the fill took; `nil` when the file came from the cache.
    var fillSeconds: Double?
}

/// A purge of `records` expired records, and the claims a consumer made while it ran.
struct PurgeResult {
    var records: Int
    var deleted: Int
    var seconds: Double
    /// Records deleted per transaction (`purgeExpired(limit:)`).
    var batchSize: Int
    var claims: Measurement
}

/// `used_memory` before and after `records` records were written through the store.
struct RedisMemoryRow {
    var records: Int
    /// `used_memory` per completed record.
    var recordBytes: Double
    /// `used_memory` per bare key of the same name holding one byte, with the same time to live.
    var bareKeyBytes: Double
    /// One record's value, as `redis-cli GET` shows it.
    var sampleValue: String
}

/// A Redis server filled with `keys` records.
struct RedisFill {
    var keys: Int
    var usedMemory: Int
    var fillSeconds: Double
}
