// `--cluster`: the single and batch Redis paths on a three-primary Redis Cluster beside one
// redis-server, in the same run and rounds, with the keys' spread over the primaries; the cluster's
// throughput as a ratio of the single server's, so the routing's own cost shows in that ratio.
import Dedup
import DedupRedis
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Redis-server processes of the benchmark's own made one cluster (no replicas): three primaries,
/// or one holding every slot (the routing's own cost, without spreading over processes).
final class BenchCluster {
    let nodes: [RedisServer]

    var url: String { nodes[0].url }

    init(executable: String, directory: String, primaries: Int) throws {
        guard let cli = findOnPath("redis-cli") else {
            throw BenchError("redis-cli not found: install it with `apt-get install redis-tools`")
        }
        var nodes: [RedisServer] = []
        for index in 0..<primaries {
            let nodeDirectory = "\(directory)/node-\(index)"
            nodes.append(
                try RedisServer(
                    executable: executable,
                    directory: nodeDirectory,
                    extraArguments: [
                        "--cluster-enabled", "yes", "--cluster-config-file", "\(nodeDirectory)/nodes.conf",
                        "--cluster-port", String(try RedisServer.freePort()),
                    ]
                )
            )
        }
        self.nodes = nodes
        if primaries == 1 {
            _ = try runProgram(
                cli,
                ["-h", nodes[0].host, "-p", String(nodes[0].port), "CLUSTER", "ADDSLOTSRANGE", "0", "16383"]
            )
        } else {
            _ = try runProgram(
                cli,
                ["--cluster", "create"] + nodes.map { "\($0.host):\($0.port)" } + [
                    "--cluster-replicas", "0", "--cluster-yes",
                ]
            )
        }
        // Poll the real state: every node must say the cluster is ok before a path runs.
        let deadline = Date() + 60
        while Date() < deadline {
            let states = try nodes.map {
                try runProgram(cli, ["-h", $0.host, "-p", String($0.port), "CLUSTER", "INFO"])
            }
            if states.allSatisfy({ $0.contains("cluster_state:ok") }) { return }
            usleep(50_000)
        }
        throw BenchError("the benchmark's Redis Cluster did not reach cluster_state:ok within 60 s")
    }

    func flushAll() throws {
        for node in nodes { try node.flushAll() }
    }

    /// Keys held by each primary (`DBSIZE`).
    func keysPerNode() throws -> [Int] {
        try nodes.map { node in
            let answer = try RedisServer.command(host: node.host, port: node.port, ["DBSIZE"])
            // The control connection answers an integer reply as its digits.
            guard let count = Int(answer) else {
                throw BenchError("DBSIZE answered \(answer)")
            }
            return count
        }
    }

    func stop() {
        for node in nodes { node.stop() }
    }
}

/// The comparison's passes and its table.
struct ClusterComparison {
    var redisServer: String
    var directory: String
    var keys: [String]
    var rounds: Int
    var logger: Logger

    /// The least throughput the cluster must keep, as a fraction of the single server's.
    static let targetRatio = 0.7
    /// How far each primary's share of the keys may stray from a third, relatively.
    static let spreadTolerance = 0.10

    private enum Target: String {
        case single = "single node"
        case oneNode = "1-node cluster"
        case cluster = "3-primary cluster"
    }
    private enum Path: String, CaseIterable {
        case single = "Redis single, new keys"
        case batch = "Redis batch (100), new keys"
    }

    /// Runs the passes and returns the Markdown section and whether every target was met.
    func run() async throws -> (text: String, allMet: Bool) {
        let single = try RedisServer(executable: redisServer, directory: directory + "/single")
        defer { single.stop() }
        let oneNode = try BenchCluster(executable: redisServer, directory: directory + "/one-node", primaries: 1)
        defer { oneNode.stop() }
        let cluster = try BenchCluster(executable: redisServer, directory: directory + "/cluster", primaries: 3)
        defer { cluster.stop() }
        progress("cluster comparison: redis-server on \(single.host):\(single.port), cluster seeded at \(cluster.url)")
        var rates: [Path: [Target: [Double]]] = [:]
        var spread: [Int] = []
        let batches = batched(keys, size: 100)
        for round in 1...rounds {
            // Who goes first alternates, so neither always meets the cooler machine.
            let order: [Target] = round % 2 == 1 ? [.single, .oneNode, .cluster] : [.cluster, .oneNode, .single]
            for path in Path.allCases {
                for target in order {
                    let url: String
                    switch target {
                    case .single:
                        try single.flushAll()
                        url = single.url
                    case .oneNode:
                        try oneNode.flushAll()
                        url = oneNode.url
                    case .cluster:
                        try cluster.flushAll()
                        url = cluster.url
                    }
                    let store = try RedisDedupStore(url: url, logger: logger)
                    let consumer = try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
                    let measurement: Measurement
                    switch path {
                    case .single:
                        _ = try await measureSingle(consumer, keys: (0..<100).map { "warm-\($0)" }, expect: .applied)
                        measurement = try await measureSingle(consumer, keys: keys, expect: .applied)
                    case .batch:
                        _ = try await measureBatches(
                            consumer,
                            batches: [(0..<100).map { "warm-\($0)" }],
                            expect: .applied
                        )
                        measurement = try await measureBatches(consumer, batches: batches, expect: .applied)
                    }
                    if target != .single {
                        guard store.isCluster else { throw BenchError("the store did not take \(url) for a cluster") }
                    }
                    if target == .cluster, spread.isEmpty { spread = try cluster.keysPerNode() }
                    await store.close()
                    rates[path, default: [:]][target, default: []].append(measurement.rate)
                    progress("  \(target.rawValue): \(path.rawValue): \(thousands(measurement.rate)) msgs/s")
                }
            }
        }
        try single.flushAll()
        try oneNode.flushAll()
        try cluster.flushAll()

        var allMet = true
        var text =
            "Redis Cluster: 3 primaries (no replicas) beside 1 server and a 1-node cluster (every slot on one node: the "
        text += "routing's own cost), 5 redis-server processes and this one left to the scheduler on "
        text += "\(ProcessInfo.processInfo.activeProcessorCount) CPUs"
        text += rounds > 1 ? " (the median of \(rounds) rounds).\n\n" : ".\n\n"
        text +=
            "| path | single node msgs/s | 1-node cluster msgs/s | 1-node / single | 3-primary cluster msgs/s | 3-primary / single | target | met |\n"
        text += "|---|---:|---:|---:|---:|---:|---:|:---:|\n"
        for path in Path.allCases {
            let singleRate = median(rates[path]?[.single] ?? [])
            let oneNodeRate = median(rates[path]?[.oneNode] ?? [])
            let clusterRate = median(rates[path]?[.cluster] ?? [])
            let ratio = singleRate > 0 ? clusterRate / singleRate : 0
            let met = ratio >= Self.targetRatio
            allMet = allMet && met
            text += "| \(path.rawValue) | \(thousands(singleRate)) | \(thousands(oneNodeRate)) | "
            text +=
                String(format: "%.2f", singleRate > 0 ? oneNodeRate / singleRate : 0)
                + " | \(thousands(clusterRate)) | "
            text += String(format: "%.2f", ratio) + " | ≥ \(Self.targetRatio) | \(met ? "yes" : "**no**") |\n"
        }
        let total = spread.reduce(0, +)
        let shares = spread.map { total > 0 ? Double($0) / Double(total) : 0 }
        let spreadMet = !shares.isEmpty && shares.allSatisfy { abs($0 - 1.0 / 3) <= Self.spreadTolerance / 3 }
        allMet = allMet && spreadMet
        text += "\nKeys per primary after the single path (\(total) records): "
        text += shares.map { String(format: "%.1f%%", $0 * 100) }.joined(separator: ", ")
        text += "; each within ±\(Int(Self.spreadTolerance * 100))% of a third: \(spreadMet ? "yes" : "**no**").\n"
        return (text, allMet)
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}

extension DedupBench {
    /// `--cluster`: prints the comparison's section; returns whether its targets were met.
    func compareCluster(redisN: Int, temp: String, rounds: Int, logger: Logger) async throws -> Bool {
        let comparison = ClusterComparison(
            redisServer: redisServer,
            directory: temp + "/cluster-comparison",
            keys: (0..<redisN).map { "msg-\($0)" },
            rounds: rounds,
            logger: logger
        )
        let (text, met) = try await comparison.run()
        print(text)
        return met
    }
}
