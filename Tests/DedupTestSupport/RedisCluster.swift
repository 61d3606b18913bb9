import Foundation

/// A real Redis Cluster for one test suite: `primaries` primaries with `replicasPerPrimary`
/// replicas each, every node a ``RedisServer`` of its own on free loopback ports (its cluster bus
/// on another free port, `cluster-port`), created with `redis-cli --cluster create` and waited for
/// until every node reports `cluster_state:ok`. ``stop()`` stops every node.
///
/// ```swift
/// try await withRedisCluster { cluster in
///     let store = try RedisDedupStore(url: cluster.url)
///     …
/// }
/// ```
public final class RedisCluster: Sendable {
    /// Every node, in the order given to `redis-cli --cluster create` (primaries first, as created).
    public let nodes: [RedisServer]

    /// A node's role and slots, as `CLUSTER NODES` tells them.
    public struct NodeState: Sendable {
        /// The node's server.
        public var server: RedisServer
        /// The node's cluster id.
        public var id: String
        /// Whether the node is a primary (`master`).
        public var isPrimary: Bool
        /// The id of the node's primary, for a replica.
        public var primaryID: String?
        /// Whether the cluster takes the node for failed (`fail` or `fail?`).
        public var isFailing: Bool
        /// The slot ranges the node serves, as `CLUSTER NODES` writes them (`0-5460`).
        public var slots: [String]
    }

    /// `redis://127.0.0.1:PORT` of the first node: a seed for the whole cluster.
    public var url: String { nodes[0].url }

    private init(nodes: [RedisServer]) {
        self.nodes = nodes
    }

    /// Starts the nodes, creates the cluster, waits until it is healthy.
    public static func start(
        primaries: Int = 3,
        replicasPerPrimary: Int = 1,
        nodeTimeout: Duration = .milliseconds(1500)
    ) async throws -> RedisCluster {
        let count = primaries * (1 + replicasPerPrimary)
        var nodes: [RedisServer] = []
        do {
            for _ in 0..<count {
                nodes.append(try await startNode(nodeTimeout: nodeTimeout))
            }
            let cluster = RedisCluster(nodes: nodes)
            let addresses = nodes.map { "127.0.0.1:\($0.port!)" }
            _ = try await nodes[0].cli(
                arguments: ["--cluster", "create"] + addresses + [
                    "--cluster-replicas", String(replicasPerPrimary), "--cluster-yes",
                ]
            )
            try await cluster.waitUntilHealthy()
            return cluster
        } catch {
            for node in nodes { await node.stop() }
            throw error
        }
    }

    /// One node, its cluster bus on a free port of its own (another port is tried when that one
    /// was taken meanwhile).
    private static func startNode(nodeTimeout: Duration) async throws -> RedisServer {
        var lastError: (any Error)?
        for _ in 0..<3 {
            do {
                return try await RedisServer.start(arguments: [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", String(try RedisServer.freePort()),
                    "--cluster-node-timeout", String(Int(nodeTimeout / .milliseconds(1))),
                    // Replicas serve no reads here; a replica takes over whatever its data's age.
                    "--cluster-replica-validity-factor", "0",
                ])
            } catch {
                lastError = error
            }
        }
        throw lastError ?? RedisServer.Failure(description: "a cluster node did not start")
    }

    /// Stops every node and removes their directories.
    public func stop() async {
        for node in nodes { await node.stop() }
    }

    /// Waits until every node that runs reports `cluster_state:ok` and knows every other node, and
    /// every replica's link to its primary is up: polls the real state, up to `timeout`.
    public func waitUntilHealthy(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            if let reason = await unhealthyReason() {
                last = reason
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            return
        }
        throw RedisServer.Failure(description: "the Redis Cluster did not become healthy: \(last)")
    }

    private func unhealthyReason() async -> String? {
        for node in nodes where node.isRunning {
            guard let info = try? await node.cli("CLUSTER", "INFO") else {
                return "\(node.url) does not answer CLUSTER INFO"
            }
            if !info.contains("cluster_state:ok") { return "\(node.url) is not ok: \(info.prefix(200))" }
            let running = nodes.count { $0.isRunning }
            guard let table = try? await node.cli("CLUSTER", "NODES") else {
                return "\(node.url) does not answer CLUSTER NODES"
            }
            let lines = table.split(whereSeparator: \.isNewline)
            let connected = lines.count {
                $0.contains("connected") && !$0.contains("fail") && !$0.contains("handshake")
            }
            if connected < running { return "\(node.url) sees \(connected) of \(running) nodes connected" }
            guard let replication = try? await node.cli("INFO", "replication") else {
                return "\(node.url) does not answer INFO"
            }
            if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                return "\(node.url) is a replica without its primary's link up"
            }
        }
        return nil
    }

    /// Every running node's state, as the node at `asking` (else the first running one) sees it.
    public func states(asking: RedisServer? = nil) async throws -> [NodeState] {
        guard let asked = asking ?? nodes.first(where: \.isRunning) else {
            throw RedisServer.Failure(description: "no node runs")
        }
        let table = try await asked.cli("CLUSTER", "NODES")
        return table.split(whereSeparator: \.isNewline).compactMap { line -> NodeState? in
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count >= 8,
                let port = Int(fields[1].split(separator: "@")[0].split(separator: ":").last ?? ""),
                let server = nodes.first(where: { $0.port == port })
            else { return nil }
            let flags = fields[2].split(separator: ",")
            return NodeState(
                server: server,
                id: fields[0],
                isPrimary: flags.contains("master"),
                primaryID: fields[3] == "-" ? nil : fields[3],
                isFailing: flags.contains("fail") || flags.contains("fail?"),
                slots: Array(fields.dropFirst(8))
            )
        }
    }

    /// The primary serving the hash slot of `key`, and one of its replicas.
    public func primaryAndReplica(forKey key: String) async throws -> (primary: RedisServer, replica: RedisServer?) {
        guard let asked = nodes.first(where: \.isRunning) else {
            throw RedisServer.Failure(description: "no node runs")
        }
        guard let slot = Int(try await asked.cli("CLUSTER", "KEYSLOT", key)) else {
            throw RedisServer.Failure(description: "no slot for \(key)")
        }
        let states = try await states()
        guard let primary = states.first(where: { state in state.isPrimary && Self.serves(state.slots, slot) }) else {
            throw RedisServer.Failure(description: "no primary serves slot \(slot)")
        }
        return (primary.server, states.first(where: { $0.primaryID == primary.id })?.server)
    }

    private static func serves(_ ranges: [String], _ slot: Int) -> Bool {
        ranges.contains { range in
            let bounds = range.split(separator: "-").compactMap { Int($0) }
            guard let first = bounds.first else { return false }
            return (first...(bounds.last ?? first)).contains(slot)
        }
    }
}

/// Runs `body` with a fresh cluster (3 primaries, a replica each), stopping it afterwards whatever
/// happens.
public func withRedisCluster<T>(
    primaries: Int = 3,
    replicasPerPrimary: Int = 1,
    _ body: (RedisCluster) async throws -> T
) async throws -> T {
    let cluster = try await RedisCluster.start(primaries: primaries, replicasPerPrimary: replicasPerPrimary)
    do {
        let value = try await body(cluster)
        await cluster.stop()
        return value
    } catch {
        await cluster.stop()
        throw error
    }
}
