// The one table: our throughput, the C ceiling's from the same run, the ratio, latency, and whether
// each target is met.
import Foundation

/// The paths the table compares.
enum BenchPath: Int, CaseIterable, Comparable {
    case sqliteSingle, sqliteSingleDuplicate, sqliteBatch, sqliteBatchDuplicate
    case redisSingle, redisSingleDuplicate, redisBatch, redisBatchDuplicate, redisConcurrent
    case streamSQLiteSingle, streamSQLiteBatch, streamRedisSingle, streamRedisBatch

    /// The stream paths: one ceiling (a plain consumer of the group) for all four.
    static let streamPaths: [BenchPath] = [.streamSQLiteSingle, .streamSQLiteBatch, .streamRedisSingle, .streamRedisBatch]

    static func < (a: BenchPath, b: BenchPath) -> Bool { a.rawValue < b.rawValue }

    var title: String {
        switch self {
        case .sqliteSingle: return "SQLite single, new keys"
        case .sqliteSingleDuplicate: return "SQLite single, duplicates"
        case .sqliteBatch: return "SQLite batch of 100, new keys"
        case .sqliteBatchDuplicate: return "SQLite batch of 100, duplicates"
        case .redisSingle: return "Redis single, new keys"
        case .redisSingleDuplicate: return "Redis single, duplicates"
        case .redisBatch: return "Redis batch of 100, new keys"
        case .redisBatchDuplicate: return "Redis batch of 100, duplicates"
        case .redisConcurrent: return "Redis single, 8 concurrent tasks"
        case .streamSQLiteSingle: return "Stream → SQLite dedup, one by one (16 in flight)"
        case .streamSQLiteBatch: return "Stream → SQLite dedup, batches of 100"
        case .streamRedisSingle: return "Stream → Redis dedup, one by one (16 in flight)"
        case .streamRedisBatch: return "Stream → Redis dedup, batches of 100"
        }
    }

    /// The lowest acceptable ratio to the ceiling (or, for the concurrent path, to Redis single);
    /// `nil` for a path measured without a target.
    var target: Double? {
        switch self {
        case .sqliteSingle, .sqliteSingleDuplicate, .redisSingle, .redisSingleDuplicate: return 0.8
        case .sqliteBatch, .sqliteBatchDuplicate, .redisBatch, .redisBatchDuplicate: return 0.6
        case .redisConcurrent: return 3
        case .streamSQLiteBatch, .streamRedisBatch: return 0.6
        case .streamSQLiteSingle, .streamRedisSingle: return nil
        }
    }

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

    /// The C side's median rate of this path (`nil` for the concurrent path, which has none).
    func ceiling(in rates: CeilingRates) -> Double? {
        rates.rate(self)
    }
}

/// Everything one run found.
struct RunResults {
    /// Every pass of our paths, in the order they ran.
    private(set) var oursPasses: [BenchPath: [Measurement]] = [:]
    var ceilings = CeilingRates()
    var memory: [MemoryCheck] = []
    /// With `--breakdown`: the same paths straight to the store, without the consumer.
    private(set) var storeOnlyPasses: [BenchPath: [Measurement]] = [:]
    /// With `--breakdown`: our Redis protocol from a plain C client (Benchmarks/redis_protocol.c).
    var protocolClient = CeilingRates()
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

    /// Each round's ratio of one path: our pass over the ceiling's pass run beside it. Empty unless
    /// both sides ran the path more than once, a pass each round.
    func roundRatios(_ path: BenchPath) -> [Double] {
        let ours = oursPasses[path] ?? []
        let ceiling = ceilings.passes(of: path)
        guard ours.count > 1, ours.count == ceiling.count else { return [] }
        return zip(ours, ceiling).map { $0.rate / $1 }
    }

    /// Our median pass of each path (see ``median(_:by:)``).
    var ours: [BenchPath: Measurement] { oursPasses.compactMapValues { median($0, by: \.rate) } }

    /// The median pass of each path straight to the store.
    var storeOnly: [BenchPath: Measurement] { storeOnlyPasses.compactMapValues { median($0, by: \.rate) } }
}

/// The memory-growth target.
let memoryGrowthLimit = 30 * 1_048_576

struct Report {
    var results: RunResults
    var usedCeilings: Bool
    /// Whether ratios are held to their targets: not for `--quick`, whose passes are too short for
    /// a ratio to mean much (a pass of a few thousand messages is over before the machine settles).
    var judgesRatios: Bool

    /// The verdict column of a ratio that is shown but not held to its target.
    static let notJudged = "not judged"

    /// The verdict column of a ratio: met, missed, or not judged.
    private func judge(_ ratio: Double, _ path: BenchPath) -> String {
        guard let target = path.target else { return "n/a" }
        guard judgesRatios else { return Self.notJudged }
        return ratio >= target ? "met" : "**missed**"
    }

    /// The table as Markdown, and whether every target that could be judged was met.
    func render() -> (text: String, allMet: Bool, judged: Int) {
        var lines: [String] = []
        var allMet = true
        var judged = 0
        let oursByPath = results.ours
        let storeOnlyByPath = results.storeOnly
        lines.append("| path | N | ours msgs/s | ceiling msgs/s | ratio | p50 µs | p99 µs | target | |")
        lines.append("|---|--:|--:|--:|--:|--:|--:|--:|---|")
        for path in BenchPath.allCases {
            guard let ours = oursByPath[path] else { continue }
            var ceilingText = "—"
            var ratioText = "—"
            var verdict = "n/a"
            var targetText = path.target.map { String(format: "≥ %.1f", $0) } ?? "—"
            if path == .redisConcurrent, let target = path.target {
                targetText = String(format: "≥ %.0f× Redis single", target)
                if let single = oursByPath[.redisSingle] {
                    let ratio = ours.rate / single.rate
                    ratioText = String(format: "%.2f× ours single", ratio)
                    verdict = judge(ratio, path)
                }
            } else if let ceiling = path.ceiling(in: results.ceilings) {
                ceilingText = thousands(ceiling)
                let ratio = ours.rate / ceiling
                ratioText = String(format: "%.2f", ratio)
                // How far the rounds spread, each pass against the ceiling's beside it.
                let rounds = results.roundRatios(path)
                if let low = rounds.min(), let high = rounds.max() {
                    ratioText += String(format: " (rounds %.2f–%.2f)", low, high)
                }
                verdict = judge(ratio, path)
            }
            if verdict != "n/a" && verdict != Self.notJudged { judged += 1 }
            if verdict.contains("missed") { allMet = false }
            let p50 = ours.latency.map { String(format: "%.0f", $0.p50) } ?? "—"
            let p99 = ours.latency.map { String(format: "%.0f", $0.p99) } ?? "—"
            lines.append(
                "| \(path.title) | \(thousands(Double(ours.messages))) | \(thousands(ours.rate)) | \(ceilingText) | \(ratioText) | \(p50) | \(p99) | \(targetText) | \(verdict) |"
            )
        }
        for path in BenchPath.allCases {
            guard let store = storeOnlyByPath[path] else { continue }
            let ceiling = path.ceiling(in: results.ceilings)
            let ours = oursByPath[path]
            var ratio = ceiling.map { String(format: "%.2f", store.rate / $0) } ?? "—"
            if let ours { ratio += String(format: " (consumer keeps %.0f%%)", 100 * ours.rate / store.rate) }
            lines.append(
                "| store only: \(path.title) | \(thousands(Double(store.messages))) | \(thousands(store.rate)) | \(ceiling.map(thousands) ?? "—") | \(ratio) | — | — | (diagnostic) | |"
            )
        }
        for path in BenchPath.allCases {
            guard let rate = path.ceiling(in: results.protocolClient) else { continue }
            let ceiling = path.ceiling(in: results.ceilings)
            var ratio = ceiling.map { String(format: "%.2f", rate / $0) } ?? "—"
            if let ours = oursByPath[path] { ratio += String(format: " (ours: %.0f%% of it)", 100 * ours.rate / rate) }
            lines.append(
                "| C client, our protocol: \(path.title) | — | \(thousands(rate)) | \(ceiling.map(thousands) ?? "—") | \(ratio) | — | — | (diagnostic) | |"
            )
        }
        // The plain stream consumer and the store's own C ceiling together: what a runner with dedup
        // could reach if it added nothing to either (time per message adds up).
        for path in BenchPath.streamPaths {
            guard let ours = oursByPath[path], let stream = path.ceiling(in: results.ceilings),
                let storePath = path.dedupCeilingPath, let store = storePath.ceiling(in: results.ceilings)
            else { continue }
            let combined = 1 / (1 / stream + 1 / store)
            lines.append(
                "| combined C ceilings: \(path.title) (stream + \(storePath.title)) | — | — | \(thousands(combined)) | \(String(format: "%.2f", ours.rate / combined)) | — | — | (diagnostic) | |"
            )
        }
        for check in results.memory {
            let met = check.growthBytes < memoryGrowthLimit
            judged += 1
            if !met { allMet = false }
            lines.append(
                "| Memory: \(thousands(Double(check.messages))) msgs, \(check.path) | \(thousands(Double(check.messages))) | \(thousands(check.rate)) | — | — | — | — | growth < 30 MiB: +\(mib(check.growthBytes)) (RSS \(mib(check.baseline.residentBytes)) → peak \(mib(check.end.peakBytes))) | \(met ? "met" : "**missed**") |"
            )
        }
        var text = lines.joined(separator: "\n")
        text += "\n\nPeak memory of the benchmark process (VmHWM): \(mib(results.startMemory.peakBytes)) before the paths, "
        text += "\(mib(results.endMemory.peakBytes)) after (resident now \(mib(results.endMemory.residentBytes)))."
        if BenchPath.allCases.contains(where: { !results.roundRatios($0).isEmpty }) {
            text += "\nA ratio is our median pass over the ceiling's; in brackets, the lowest and highest ratio of one round's pass "
            text += "of ours over the ceiling's pass run beside it."
        }
        if !usedCeilings { text += "\nCeilings were not run (--no-ceilings): ratio targets are not judged." }
        if !judgesRatios { text += "\nA quick look (--quick): one short pass of each side, so ratios are shown but not judged." }
        return (text, allMet, judged)
    }
}

/// 12345.6 → "12,346".
func thousands(_ value: Double) -> String {
    let digits = String(Int(value.rounded()))
    var out = ""
    for (index, character) in digits.reversed().enumerated() {
        if index > 0, index % 3 == 0, character != "-" { out.append(",") }
        out.append(character)
    }
    return String(out.reversed())
}
