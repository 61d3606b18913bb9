// The one table: our throughput, the C ceiling's from the same run (or, on a grown store, ours on an
// empty one), the ratio, latency, the server's CPU per message, and whether each target is met.
import Foundation

/// The paths the table compares.
enum BenchPath: Int, CaseIterable, Comparable {
    case sqliteSingle, sqliteSingleDuplicate, sqliteBatch, sqliteBatchDuplicate, sqliteTxn, sqliteTxnDuplicate
    case redisSingle, redisSingleDuplicate, redisBatch, redisBatchDuplicate, redisConcurrent
    case redisConcurrentOnStoreExecutor
    case postgresSingle, postgresSingleDuplicate, postgresBatch, postgresBatchDuplicate, postgresTxn
    case postgresTxnDuplicate
    case streamSQLiteSingle, streamSQLiteBatch, streamRedisSingle, streamRedisBatch
    case grownSQLiteSingle, grownSQLiteSingleDuplicate, grownSQLiteBatch, grownSQLiteBatchDuplicate
    case grownRedisSingle, grownRedisSingleDuplicate, grownRedisBatch, grownRedisBatchDuplicate

    /// The stream paths: one ceiling (a plain consumer of the group) for all four.
    static let streamPaths: [BenchPath] = [
        .streamSQLiteSingle, .streamSQLiteBatch, .streamRedisSingle, .streamRedisBatch,
    ]

    /// The Redis paths whose server CPU per message is compared with the ceiling's.
    static let serverCPUPaths: [BenchPath] = [
        .redisSingle, .redisSingleDuplicate, .redisBatch, .redisBatchDuplicate, .redisConcurrent,
        .redisConcurrentOnStoreExecutor,
    ]

    /// The concurrent Redis paths: one ceiling (the C client with as many messages in flight)
    /// for both.
    static let concurrentPaths: [BenchPath] = [.redisConcurrent, .redisConcurrentOnStoreExecutor]

    static func < (a: BenchPath, b: BenchPath) -> Bool { a.rawValue < b.rawValue }

    var title: String {
        switch self {
        case .sqliteSingle: return "SQLite single, new keys"
        case .sqliteSingleDuplicate: return "SQLite single, duplicates"
        case .sqliteBatch: return "SQLite batch of 100, new keys"
        case .sqliteBatchDuplicate: return "SQLite batch of 100, duplicates"
        case .sqliteTxn: return "SQLite transactional, one effect row, new keys"
        case .sqliteTxnDuplicate: return "SQLite transactional, one effect row, duplicates"
        case .redisSingle: return "Redis single, new keys"
        case .redisSingleDuplicate: return "Redis single, duplicates"
        case .redisBatch: return "Redis batch of 100, new keys"
        case .redisBatchDuplicate: return "Redis batch of 100, duplicates"
        case .redisConcurrent: return "Redis single, 8 concurrent tasks"
        case .redisConcurrentOnStoreExecutor: return "Redis single, 8 concurrent tasks on the store's executor"
        case .postgresSingle: return "PostgreSQL single, new keys"
        case .postgresSingleDuplicate: return "PostgreSQL single, duplicates"
        case .postgresBatch: return "PostgreSQL batch of 100, new keys"
        case .postgresBatchDuplicate: return "PostgreSQL batch of 100, duplicates"
        case .postgresTxn: return "PostgreSQL transactional, one effect row, new keys"
        case .postgresTxnDuplicate: return "PostgreSQL transactional, one effect row, duplicates"
        case .streamSQLiteSingle: return "Stream → SQLite dedup, one by one (16 in flight)"
        case .streamSQLiteBatch: return "Stream → SQLite dedup, batches of 100"
        case .streamRedisSingle: return "Stream → Redis dedup, one by one (16 in flight)"
        case .streamRedisBatch: return "Stream → Redis dedup, batches of 100"
        case .grownSQLiteSingle: return "SQLite single, new keys"
        case .grownSQLiteSingleDuplicate: return "SQLite single, duplicates"
        case .grownSQLiteBatch: return "SQLite batch of 100, new keys"
        case .grownSQLiteBatchDuplicate: return "SQLite batch of 100, duplicates"
        case .grownRedisSingle: return "Redis single, new keys"
        case .grownRedisSingleDuplicate: return "Redis single, duplicates"
        case .grownRedisBatch: return "Redis batch of 100, new keys"
        case .grownRedisBatchDuplicate: return "Redis batch of 100, duplicates"
        }
    }

    /// The lowest acceptable ratio to the ceiling (on a grown store: to ours on an empty one);
    /// `nil` for a path measured without a target.
    var target: Double? {
        switch self {
        case .sqliteSingle, .sqliteSingleDuplicate, .redisSingle, .redisSingleDuplicate: return 0.8
        case .sqliteBatch, .sqliteBatchDuplicate, .redisBatch, .redisBatchDuplicate: return 0.6
        case .sqliteTxn, .sqliteTxnDuplicate: return 0.8
        case .postgresSingle, .postgresSingleDuplicate, .postgresTxn, .postgresTxnDuplicate: return 0.8
        case .postgresBatch, .postgresBatchDuplicate: return 0.6
        case .redisConcurrent, .redisConcurrentOnStoreExecutor: return 0.7
        case .streamSQLiteBatch, .streamRedisBatch: return 0.6
        case .streamSQLiteSingle, .streamRedisSingle: return nil
        case .grownSQLiteSingle, .grownSQLiteSingleDuplicate, .grownSQLiteBatch, .grownSQLiteBatchDuplicate: return 0.8
        case .grownRedisSingle, .grownRedisSingleDuplicate, .grownRedisBatch, .grownRedisBatchDuplicate: return 0.8
        }
    }

    /// A path on a store already holding many records, compared with ours on an empty store
    /// rather than with a C ceiling.
    var isGrown: Bool { rawValue >= BenchPath.grownSQLiteSingle.rawValue }

    /// For a stream path, the dedup store's own path whose C ceiling its records cost.
    var dedupCeilingPath: BenchPath? {
        switch self {
        case .streamSQLiteSingle: return .sqliteSingle
        case .streamSQLiteBatch: return .sqliteBatch
        case .streamRedisSingle: return .redisSingle
        case .streamRedisBatch: return .redisBatch
        default: return nil
        }
    }

    /// The C side's median rate of this path.
    func ceiling(in rates: CeilingRates) -> Double? {
        rates.rate(self)
    }
}

/// The largest acceptable ratio of our redis-server CPU per message to the ceiling's.
let serverCPUTarget = 1.3

/// The largest acceptable p99 of a claim while the purge runs, in microseconds.
let purgeLatencyTarget = 50_000.0
/// A completed Redis record may cost at most this many times a bare key of the same name holding
/// one byte with the same time to live.
let redisMemoryTarget = 1.3

/// The memory-growth target.
let memoryGrowthLimit = 30 * 1_048_576

struct Report {
    var results: RunResults
    var usedCeilings: Bool
    /// Whether targets are held to: not for `--quick`, whose passes are too short for a ratio to
    /// mean much (a pass of a few thousand messages is over before the machine settles).
    var judgesRatios: Bool

    /// The verdict column of a ratio that is shown but not held to its target.
    static let notJudged = "not judged"

    private func verdict(_ met: Bool) -> String {
        guard judgesRatios else { return Self.notJudged }
        return met ? "met" : "**missed**"
    }

    /// The verdict column of a ratio: met, missed, or not judged.
    private func judge(_ ratio: Double, _ path: BenchPath) -> String {
        guard let target = path.target else { return "n/a" }
        return verdict(ratio >= target)
    }

    private func title(_ path: BenchPath) -> String {
        switch path {
        case .grownSQLiteSingle, .grownSQLiteSingleDuplicate, .grownSQLiteBatch, .grownSQLiteBatchDuplicate:
            return
                "\(path.title), \(thousands(Double(results.growth.sqliteRecords ?? 0))) records present (reference: an empty store)"
        case .grownRedisSingle, .grownRedisSingleDuplicate, .grownRedisBatch, .grownRedisBatchDuplicate:
            return
                "\(path.title), \(thousands(Double(results.growth.redisFill?.keys ?? 0))) keys present (reference: an empty server)"
        default:
            return path.title
        }
    }

    private struct Table {
        var lines = [
            "| path | N | ours msgs/s | ceiling msgs/s | ratio | p50 µs | p99 µs | target | |",
            "|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        var allMet = true
        var judged = 0

        mutating func row(_ cells: [String]) {
            let verdict = cells.last ?? ""
            if verdict == "met" || verdict.contains("missed") { judged += 1 }
            if verdict.contains("missed") { allMet = false }
            lines.append("| " + cells.joined(separator: " | ") + " |")
        }
    }

    /// The table as Markdown, and whether every target that could be judged was met.
    func render() -> (text: String, allMet: Bool, judged: Int) {
        var table = Table()
        let oursByPath = results.ours
        for path in BenchPath.allCases where !path.isGrown {
            pathRow(path, oursByPath, into: &table)
        }
        serverCPURows(oursByPath, into: &table)
        for path in BenchPath.allCases where path.isGrown {
            pathRow(path, oursByPath, into: &table)
        }
        growthRows(into: &table)
        diagnosticRows(oursByPath, into: &table)
        for check in results.memory {
            let met = check.growthBytes < memoryGrowthLimit
            table.judged += 1
            if !met { table.allMet = false }
            table.lines.append(
                "| Memory: \(thousands(Double(check.messages))) msgs, \(check.path) | \(thousands(Double(check.messages))) | \(thousands(check.rate)) | — | — | — | — | growth < 30 MiB: +\(mib(check.growthBytes)) (RSS \(mib(check.baseline.residentBytes)) → peak \(mib(check.end.peakBytes))) | \(met ? "met" : "**missed**") |"
            )
        }
        var text = table.lines.joined(separator: "\n") + "\n"
        text += notes()
        return (text, table.allMet, table.judged)
    }

    private func pathRow(_ path: BenchPath, _ oursByPath: [BenchPath: Measurement], into table: inout Table) {
        guard let ours = oursByPath[path] else { return }
        var ceilingText = "—"
        var ratioText = "—"
        var verdict = "n/a"
        let targetText = path.target.map { String(format: "≥ %.1f", $0) } ?? "—"
        if let reference = results.reference(path) {
            ceilingText = thousands(reference)
            let ratio = ours.rate / reference
            ratioText = String(format: "%.2f", ratio)
            // How far the rounds spread, each pass against the reference pass beside it.
            let rounds = results.roundRatios(path)
            if let low = rounds.min(), let high = rounds.max() {
                ratioText += String(format: " (rounds %.2f–%.2f)", low, high)
            }
            verdict = judge(ratio, path)
        }
        let p50 = ours.latency.map { String(format: "%.0f", $0.p50) } ?? "—"
        let p99 = ours.latency.map { String(format: "%.0f", $0.p99) } ?? "—"
        table.row([
            title(path), thousands(Double(ours.messages)), thousands(ours.rate), ceilingText, ratioText, p50, p99,
            targetText, verdict,
        ])
    }

    /// redis-server's CPU time per message, ours against the ceiling's, one row per Redis path.
    private func serverCPURows(_ oursByPath: [BenchPath: Measurement], into table: inout Table) {
        for path in BenchPath.serverCPUPaths {
            guard let ours = results.oursServerMicroseconds(path), let messages = oursByPath[path]?.messages else {
                continue
            }
            let ceiling = results.ceilings.serverMicrosecondsPerMessage(path)
            let ratio = ceiling.map { ours / $0 }
            table.row([
                "\(path.title): server CPU per message", thousands(Double(messages)), String(format: "%.1f µs", ours),
                ceiling.map { String(format: "%.1f µs", $0) } ?? "—", ratio.map { String(format: "%.2f", $0) } ?? "—",
                "—", "—",
                String(format: "≤ %.1f× ceiling", serverCPUTarget),
                ratio.map { verdict($0 <= serverCPUTarget) } ?? "n/a",
            ])
        }
    }

    /// The growth group's own rows: the grown SQLite file's size, the purge beside a consumer, and
    /// Redis memory per record.
    private func growthRows(into table: inout Table) {
        let growth = results.growth
        if let file = growth.sqliteFile {
            table.row([
                "SQLite file holding \(thousands(Double(file.records))) completed records",
                thousands(Double(file.records)),
                String(format: "%.0f B/record", Double(file.bytes) / Double(file.records)), "—", "—", "—", "—",
                "— (file \(mib(file.bytes)))", "n/a",
            ])
        }
        if let purge = growth.purge {
            let p99 = purge.claims.latency?.p99 ?? .infinity
            table.row([
                "SQLite purge of \(thousands(Double(purge.records))) expired records, claims beside it (new keys, one at a time)",
                thousands(Double(purge.claims.messages)), thousands(purge.claims.rate), "—", "—",
                purge.claims.latency.map { String(format: "%.0f", $0.p50) } ?? "—",
                purge.claims.latency.map { String(format: "%.0f", $0.p99) } ?? "—",
                String(format: "claims' p99 < %.0f ms (purge: %.1f s, ", purgeLatencyTarget / 1000, purge.seconds)
                    + "\(thousands(Double(purge.deleted) / purge.seconds)) records/s, \(thousands(Double(purge.batchSize))) a transaction)",
                verdict(p99 < purgeLatencyTarget),
            ])
        }
        if let memory = growth.redisMemory {
            let ratio = memory.recordBytes / memory.bareKeyBytes
            table.row([
                "Redis memory: completed records through the store, against bare keys of the same names",
                thousands(Double(memory.records)),
                String(format: "%.0f B/record", memory.recordBytes),
                String(format: "%.0f B/bare key", memory.bareKeyBytes),
                String(format: "%.2f", ratio), "—", "—",
                String(format: "≤ %.1f× a bare key", redisMemoryTarget), verdict(ratio <= redisMemoryTarget),
            ])
        }
    }

    /// A client of the same protocol or statements as ours beside the ceiling: its rate, its ratio
    /// to the ceiling, and how much of it ours keeps.
    private func referenceClientRows(
        _ label: String,
        _ rates: CeilingRates,
        _ oursByPath: [BenchPath: Measurement],
        into table: inout Table
    ) {
        for path in BenchPath.allCases {
            guard let rate = path.ceiling(in: rates) else { continue }
            let ceiling = path.ceiling(in: results.ceilings)
            var ratio = ceiling.map { String(format: "%.2f", rate / $0) } ?? "—"
            if let ours = oursByPath[path] { ratio += String(format: " (ours: %.0f%% of it)", 100 * ours.rate / rate) }
            table.row([
                "\(label): \(path.title)", "—", thousands(rate), ceiling.map(thousands) ?? "—", ratio,
                "—", "—", "(diagnostic)", "",
            ])
        }
    }

    private func diagnosticRows(_ oursByPath: [BenchPath: Measurement], into table: inout Table) {
        // Plain C clients on the same grown and empty stores (the store's SQL; the Redis ceiling):
        // the part of a grown store's cost that is SQLite's or redis-server's own.
        let plain = results.growth.plainClients
        for path in BenchPath.allCases where path.isGrown {
            guard let grown = plain.grown[path].flatMap({ median($0, by: { $0 }) }),
                let empty = plain.empty[path].flatMap({ median($0, by: { $0 }) })
            else { continue }
            var ratio = String(format: "%.2f", grown / empty)
            if let ours = oursByPath[path], let reference = results.reference(path) {
                ratio += String(format: " (ours: %.2f)", ours.rate / reference)
            }
            let client = path.rawValue >= BenchPath.grownRedisSingle.rawValue ? "the Redis ceiling" : "the store's SQL"
            table.row([
                "C client, \(client): \(title(path))", thousands(Double(results.ours[path]?.messages ?? 0)),
                thousands(grown), thousands(empty), ratio, "—", "—", "(diagnostic)", "",
            ])
        }
        for (path, store) in results.storeOnly.sorted(by: { $0.key < $1.key }) {
            let ceiling = path.ceiling(in: results.ceilings)
            var ratio = ceiling.map { String(format: "%.2f", store.rate / $0) } ?? "—"
            if let ours = oursByPath[path] {
                ratio += String(format: " (consumer keeps %.0f%%)", 100 * ours.rate / store.rate)
            }
            table.row([
                "store only: \(path.title)", thousands(Double(store.messages)), thousands(store.rate),
                ceiling.map(thousands) ?? "—", ratio,
                "—", "—", "(diagnostic)", "",
            ])
        }
        referenceClientRows("C client, our protocol", results.protocolClient, oursByPath, into: &table)
        referenceClientRows("bare postgres-nio loop, same statements", results.postgresNIO, oursByPath, into: &table)
        // The plain stream consumer and the store's own C ceiling together: what a runner with dedup
        // could reach if it added nothing to either (time per message adds up).
        for path in BenchPath.streamPaths {
            guard let ours = oursByPath[path], let stream = path.ceiling(in: results.ceilings),
                let storePath = path.dedupCeilingPath, let store = storePath.ceiling(in: results.ceilings)
            else { continue }
            let combined = 1 / (1 / stream + 1 / store)
            table.row([
                "combined C ceilings: \(path.title) (stream + \(storePath.title))", "—", "—", thousands(combined),
                String(format: "%.2f", ours.rate / combined), "—", "—", "(diagnostic)", "",
            ])
        }
    }

    private func notes() -> String {
        var text =
            "\nPeak memory of the benchmark process (VmHWM): \(mib(results.startMemory.peakBytes)) before the paths, "
        text += "\(mib(results.endMemory.peakBytes)) after (resident now \(mib(results.endMemory.residentBytes)))."
        if BenchPath.allCases.contains(where: { !results.roundRatios($0).isEmpty }) {
            text +=
                "\nA ratio is our median pass over the ceiling's; in brackets, the lowest and highest ratio of one round's pass "
            text += "of ours over the ceiling's pass run beside it."
        }
        if BenchPath.serverCPUPaths.contains(where: { results.oursServerMicroseconds($0) != nil }) {
            text +=
                "\nServer CPU per message: redis-server's used_cpu_sys + used_cpu_user (INFO cpu) read before and after each "
            text += "pass, over the pass's messages; the median of the passes, ours and the ceiling's alike."
        }
        let growth = results.growth
        if let file = growth.sqliteFile {
            text += "\nGrown SQLite store: \(thousands(Double(file.records))) completed records, "
            text += file.fillSeconds.map { String(format: "filled in %.0f s", $0) } ?? "a cached fill"
            text += "; each round claims fresh keys among them (the reference: the same keys on an empty file)."
        }
        if let fill = growth.redisFill {
            text +=
                "\nGrown Redis server: \(thousands(Double(fill.keys))) completed records (the store's own record value), "
            text += String(format: "filled in %.0f s, used_memory ", fill.fillSeconds) + mib(fill.usedMemory)
            text += "; each round claims fresh keys (the reference: the same keys on an empty server)."
        }
        if !usedCeilings { text += "\nCeilings were not run (--no-ceilings): ratio targets are not judged." }
        if !judgesRatios {
            text += "\nA quick look (--quick): short passes and small stores, so targets are shown but not judged."
        }
        return text
    }
}

/// 12345.6 → "12,346".
func thousands(_ value: Double) -> String {
    guard value.isFinite else { return "—" }
    let digits = String(Int(value.rounded()))
    var out = ""
    for (index, character) in digits.reversed().enumerated() {
        if index > 0, index % 3 == 0, character != "-" { out.append(",") }
        out.append(character)
    }
    return String(out.reversed())
}
