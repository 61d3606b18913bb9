// The measured paths: IdempotentConsumer with its default configuration and a no-op handler, over a
// real store, one message at a time (`process(key:)`), in batches (`processBatch`), or from several
// tasks at once. Every outcome is checked, so a fast wrong answer cannot pass for a fast right one.
import Dedup
import DedupSQLite
import Foundation

/// The throughput, and on the single-message paths the latency, of one pass over a set of keys.
struct Measurement {
    var messages: Int
    var seconds: Double
    var latency: (p50: Double, p99: Double)?
    /// On a Redis path: redis-server's CPU time over the pass, in seconds.
    var serverCPU: Double?

    var rate: Double { Double(messages) / seconds }
    /// redis-server's CPU time per message, in microseconds.
    var serverMicrosecondsPerMessage: Double? { serverCPU.map { $0 * 1e6 / Double(messages) } }
}

/// What every message of a pass must come out as.
enum Expected: String {
    case applied
    case duplicate

    func matches(_ outcome: ProcessOutcome) -> Bool {
        switch (self, outcome) {
        case (.applied, .applied), (.duplicate, .duplicate): return true
        default: return false
        }
    }
}

let keyStrategy = KeyStrategy<String>.messageID { $0 }

/// One message at a time through `process(key:)`, timing each.
func measureSingle(_ consumer: IdempotentConsumer, keys: [String], expect: Expected) async throws -> Measurement {
    try await measureOneByOne(keys: keys, expect: expect) { key in
        try await consumer.process(key: key) { _ in }
    }
}

/// Sends `keys` one at a time through `process`, timing each and checking every outcome. Inlined
/// into each caller, so the message's call is direct, as in a consumer's own loop.
@inline(__always)
func measureOneByOne(
    keys: [String],
    expect: Expected,
    _ process: (String) async throws -> ProcessOutcome
) async throws -> Measurement {
    var latencies = LatencyRecorder(capacity: keys.count)
    var wrong = 0
    let clock = ContinuousClock()
    let start = clock.now
    // Each message is timed with integer nanoseconds: a clock read and a subtraction, not
    // `Duration`'s 128-bit conversions (the ceilings time no message at all).
    var previous = MonotonicInstant.now
    for key in keys {
        let outcome = try await process(key)
        let now = MonotonicInstant.now
        latencies.record(now.nanoseconds(since: previous))
        previous = now
        if !expect.matches(outcome) { wrong += 1 }
    }
    let elapsed = clock.now - start
    guard wrong == 0 else {
        throw BenchError("\(wrong) of \(keys.count) messages did not come out \(expect.rawValue)")
    }
    return Measurement(messages: keys.count, seconds: elapsed.seconds, latency: latencies.percentiles())
}

/// The table the transactional handler writes its effect to, one row per message (the C ceiling's
/// `txn` mode writes the same row).
let effectTable = "bench_effects"

/// Creates ``effectTable`` in the store's file.
func createEffectTable(_ store: SQLiteDedupStore) async throws {
    _ = try await store.withTransaction { transaction in
        try transaction.execute(
            "CREATE TABLE IF NOT EXISTS \(effectTable)(message_id TEXT NOT NULL, fencing INTEGER NOT NULL)"
        )
    }
}

/// The rows of ``effectTable``.
func effectRowCount(_ store: SQLiteDedupStore) async throws -> Int {
    try await store.withTransaction { transaction in
        Int(try transaction.query("SELECT count(*) FROM \(effectTable)").first?[0].int64 ?? -1)
    }
}

/// One message at a time through `processInTransaction`, whose handler inserts one effect row: the
/// claim, the row and the completion commit in one transaction. Timing each.
func measureTransactional(_ consumer: IdempotentConsumer, keys: [String], expect: Expected) async throws -> Measurement
{
    try await measureOneByOne(keys: keys, expect: expect) { key in
        try await consumer.processInTransaction(key: key) { transaction, context in
            try transaction.execute(
                "INSERT INTO \(effectTable)(message_id, fencing) VALUES (?, ?)",
                [.text(key), .integer(context.fencingToken)]
            )
        }
    }
}

/// Batches through `processBatch`.
func measureBatches(_ consumer: IdempotentConsumer, batches: [[String]], expect: Expected) async throws -> Measurement {
    var wrong = 0
    var total = 0
    let clock = ContinuousClock()
    let start = clock.now
    for batch in batches {
        let results = try await consumer.processBatch(batch, keyStrategy: keyStrategy) { _, _ in }
        for result in results {
            switch result {
            case .success(let outcome): if !expect.matches(outcome) { wrong += 1 }
            case .failure(let error): throw error
            }
        }
        total += batch.count
    }
    let elapsed = clock.now - start
    guard wrong == 0 else {
        throw BenchError("\(wrong) of \(total) batched messages did not come out \(expect.rawValue)")
    }
    return Measurement(messages: total, seconds: elapsed.seconds, latency: nil)
}

/// `tasks` tasks, each sending its share of the keys one at a time through the same consumer; with
/// `executor`, the tasks prefer it (the store's, see `RedisDedupStore.taskExecutor`).
func measureConcurrent(
    _ consumer: IdempotentConsumer,
    keys: [String],
    tasks: Int,
    executor: (any TaskExecutor)? = nil
) async throws -> Measurement {
    let clock = ContinuousClock()
    let start = clock.now
    let perTask = (keys.count + tasks - 1) / tasks
    let (latencies, wrong) = try await withThrowingTaskGroup(of: (LatencyRecorder, Int).self) { group in
        for task in 0..<tasks {
            let slice = Array(keys[min(keys.count, task * perTask)..<min(keys.count, (task + 1) * perTask)])
            group.addTask(executorPreference: executor) {
                var latencies = LatencyRecorder(capacity: slice.count)
                var wrong = 0
                var previous = MonotonicInstant.now
                for key in slice {
                    let outcome = try await consumer.process(key: key) { _ in }
                    let now = MonotonicInstant.now
                    latencies.record(now.nanoseconds(since: previous))
                    previous = now
                    if !Expected.applied.matches(outcome) { wrong += 1 }
                }
                return (latencies, wrong)
            }
        }
        var all = LatencyRecorder(capacity: keys.count)
        var wrong = 0
        for try await (latencies, taskWrong) in group {
            all.append(contentsOf: latencies)
            wrong += taskWrong
        }
        return (all, wrong)
    }
    let elapsed = clock.now - start
    guard wrong == 0 else {
        throw BenchError("\(wrong) of \(keys.count) concurrent messages did not come out applied")
    }
    return Measurement(messages: keys.count, seconds: elapsed.seconds, latency: latencies.percentiles())
}

/// Splits keys into batches of `size`, before any timing starts (the ceiling has its keys in memory too).
func batched(_ keys: [String], size: Int) -> [[String]] {
    stride(from: 0, to: keys.count, by: size).map { Array(keys[$0..<min(keys.count, $0 + size)]) }
}

/// The result of the memory check.
struct MemoryCheck {
    var path: String
    var messages: Int
    var rate: Double
    /// Resident memory once the store and consumer are warm (after the first messages).
    var baseline: MemoryReading
    /// At the end.
    var end: MemoryReading

    /// Growth of the peak over the warm baseline: the peak at the end minus what was resident at
    /// the baseline (conservative: any earlier peak counts against us).
    var growthBytes: Int { max(0, end.peakBytes - baseline.residentBytes) }
}

/// Pushes `messages` new keys through a path, generating each key when it is sent (a million keys
/// held in memory would weigh more than what is measured), and reports how resident memory grew.
func measureMemory(
    _ consumer: IdempotentConsumer,
    path: MemoryPath,
    messages: Int,
    warmUp: Int = 10_000
) async throws -> MemoryCheck {
    var generator = KeyGenerator(seed: 0xD1CE_5EED_0000_0001)
    var baseline: MemoryReading?
    let clock = ContinuousClock()
    var start = clock.now
    var sent = 0
    var wrong = 0
    var lastReport = clock.now
    while sent < messages {
        if baseline == nil, sent >= min(warmUp, messages / 10) {
            baseline = MemoryReading.now()
            start = clock.now
        }
        switch path {
        case .sqliteSingle, .redisSingle:
            let outcome = try await consumer.process(key: generator.key()) { _ in }
            if !Expected.applied.matches(outcome) { wrong += 1 }
            sent += 1
        case .redisBatch, .sqliteBatch:
            var batch: [String] = []
            batch.reserveCapacity(100)
            for _ in 0..<min(100, messages - sent) { batch.append(generator.key()) }
            for result in try await consumer.processBatch(batch, keyStrategy: keyStrategy, { _, _ in }) {
                if case .success(let outcome) = result, Expected.applied.matches(outcome) { continue }
                wrong += 1
            }
            sent += batch.count
        }
        if clock.now - lastReport > .seconds(5) {
            lastReport = clock.now
            progress("  memory: \(sent) of \(messages) messages, peak \(mib(MemoryReading.now().peakBytes))")
        }
    }
    let elapsed = clock.now - start
    guard wrong == 0 else { throw BenchError("\(wrong) of \(messages) messages did not come out applied") }
    let base = baseline ?? MemoryReading.now()
    return MemoryCheck(
        path: path.title,
        messages: messages,
        rate: Double(messages - min(warmUp, messages / 10)) / elapsed.seconds,
        baseline: base,
        end: MemoryReading.now()
    )
}

/// Which path the memory check drives.
enum MemoryPath: String, CaseIterable {
    case sqliteSingle = "sqlite-single"
    case sqliteBatch = "sqlite-batch"
    case redisSingle = "redis-single"
    case redisBatch = "redis-batch"

    var title: String {
        switch self {
        case .sqliteSingle: return "SQLite single"
        case .sqliteBatch: return "SQLite batch of 100"
        case .redisSingle: return "Redis single"
        case .redisBatch: return "Redis batch of 100"
        }
    }

    var isRedis: Bool { self == .redisSingle || self == .redisBatch }
}

/// The store alone, as the consumer drives it (claim, then complete what was acquired), without the
/// consumer: with `--breakdown`, the distance to the ceiling splits into the store's part and the
/// consumer's part.
func measureStoreSingle(_ store: any DedupStore, keys: [String], expect: Expected) async throws -> Measurement {
    let lease = Duration.seconds(30)
    let retention = Duration.seconds(24 * 3600)
    var wrong = 0
    let clock = ContinuousClock()
    let start = clock.now
    for key in keys {
        let id = try RecordID(namespace: "bench", key: key)
        switch try await store.claim(ClaimRequest(id: id, lease: lease, retention: retention)) {
        case .acquired(let granted):
            try await store.complete(Completion(lease: granted, retention: retention))
            if expect != .applied { wrong += 1 }
        case .duplicate:
            if expect != .duplicate { wrong += 1 }
        default:
            wrong += 1
        }
    }
    let elapsed = clock.now - start
    guard wrong == 0 else {
        throw BenchError("store only: \(wrong) of \(keys.count) answers were not \(expect.rawValue)")
    }
    return Measurement(messages: keys.count, seconds: elapsed.seconds, latency: nil)
}

/// Batches straight to the store: one batch claim, one batch complete of what was acquired.
func measureStoreBatches(_ store: any DedupStore, batches: [[String]], expect: Expected) async throws -> Measurement {
    let lease = Duration.seconds(30)
    let retention = Duration.seconds(24 * 3600)
    var wrong = 0
    var total = 0
    let clock = ContinuousClock()
    let start = clock.now
    for batch in batches {
        var requests: [ClaimRequest] = []
        requests.reserveCapacity(batch.count)
        for key in batch {
            requests.append(
                ClaimRequest(id: try RecordID(namespace: "bench", key: key), lease: lease, retention: retention)
            )
        }
        var completions: [Completion] = []
        for answer in try await store.claim(batch: requests) {
            switch answer {
            case .acquired(let granted):
                completions.append(Completion(lease: granted, retention: retention))
                if expect != .applied { wrong += 1 }
            case .duplicate:
                if expect != .duplicate { wrong += 1 }
            default:
                wrong += 1
            }
        }
        if !completions.isEmpty {
            for answer in try await store.complete(batch: completions) where answer != .completed { wrong += 1 }
        }
        total += batch.count
    }
    let elapsed = clock.now - start
    guard wrong == 0 else { throw BenchError("store only: \(wrong) of \(total) answers were not \(expect.rawValue)") }
    return Measurement(messages: total, seconds: elapsed.seconds, latency: nil)
}
