import Dedup

// Cluster mode: finding out whether the URL's server is a cluster node, and routing the calls then.
extension RedisDedupStore {
    /// What the URL's server turned out to be, on the first call.
    enum Topology: UInt8 {
        case unknown, single, cluster
    }

    /// Whether the server answered as a Redis Cluster node (known after the first call).
    public var isCluster: Bool { topology.load(ordering: .relaxed) == Topology.cluster.rawValue }

    /// The first call asks the server for its slot map (`CLUSTER SLOTS`): a server without cluster
    /// support refuses, and the store talks to it alone from then on; a cluster node answers with
    /// the map, and the calls go through the ``ClusterRouter``.
    func executeRouted(_ commands: [RedisCommand], mayRunInline: Bool) async throws(DedupError) -> [RedisReply] {
        if topology.load(ordering: .relaxed) == Topology.unknown.rawValue {
            try await discoverTopology()
            if topology.load(ordering: .relaxed) == Topology.single.rawValue {
                return try await seedPool.pick().execute(commands, mayRunInline: mayRunInline)
            }
        }
        return try await cluster.execute(commands, mayRunInline: mayRunInline)
    }

    /// Finds out whether the server is a cluster node, unless known already.
    func resolveTopology() async throws(DedupError) {
        if topology.load(ordering: .relaxed) == Topology.unknown.rawValue { try await discoverTopology() }
    }

    private func discoverTopology() async throws(DedupError) {
        let (reply, asked) = try await askSeedsForSlots()
        // Refused: cluster support disabled, or `CLUSTER` renamed or not granted; a cluster node
        // behind such an ACL answers keys of other nodes with `MOVED`, which then fails typed.
        if let text = reply.errorText {
            guard endpoint.additionalSeeds.isEmpty else {
                throw DedupError(
                    .invalidConfiguration,
                    "several Redis seed nodes name a cluster, but \(asked) is not a cluster node: \(text)",
                    redisErrorText: text
                )
            }
            topology.store(Topology.single.rawValue, ordering: .relaxed)
            return
        }
        let map = try SlotMap(clusterSlots: reply, askedNode: asked)
        cluster.adopt(map)
        if topology.exchange(Topology.cluster.rawValue, ordering: .relaxed) != Topology.cluster.rawValue {
            logger.debug(
                "Redis server is a cluster node; routing by hash slot",
                metadata: [
                    "endpoint": "\(endpoint)", "primaries": "\(map.primaries.count)", "slots": "\(map.coveredSlots)",
                ]
            )
        }
    }

    /// `CLUSTER SLOTS` from the URL's first seed node, else from the next that can be reached
    /// (`redis://host1:port1,host2:port2`): its reply (an error from a server without cluster
    /// support) and the node that gave it. With several seeds, one that refuses the command for
    /// another reason (an ACL without `cluster|slots`, a proxy) is passed over like one that cannot
    /// be reached. None answering: an error naming each seed tried and why.
    private func askSeedsForSlots() async throws(DedupError) -> (RedisReply, ClusterNodeAddress) {
        var seeds = [(cluster.seedAddress, seedPool)]
        if !endpoint.additionalSeeds.isEmpty { seeds += cluster.additionalSeedPools() }
        var failures: [String] = []
        var refusal: String?
        for (node, pool) in seeds {
            do {
                let reply = try await pool.pick().execute([ClusterRouter.clusterSlotsCommand])[0]
                guard seeds.count > 1, let text = reply.errorText, !Self.saysClusterSupportIsDisabled(text) else {
                    return (reply, node)
                }
                failures.append("\(node): \(text)")
                refusal = text
            } catch {
                // Another seed may answer; any other error (a refused login, say) is the cluster's.
                guard seeds.count > 1, error.code == .storeUnavailable || error.code == .timeout else { throw error }
                failures.append("\(node): \(error.message)")
            }
        }
        let tried = failures.joined(separator: "; ")
        if let refusal {
            throw DedupError(
                .invalidConfiguration,
                "no seed node of the Redis Cluster at \(endpoint.redactedDescription) gave its slot map; tried \(tried)",
                redisErrorText: refusal
            )
        }
        throw DedupError(
            .storeUnavailable,
            "no seed node of the Redis Cluster at \(endpoint.redactedDescription) answered CLUSTER SLOTS; tried \(tried)"
        )
    }

    /// Whether `CLUSTER SLOTS` was refused because the server runs without cluster support.
    static func saysClusterSupportIsDisabled(_ errorText: String) -> Bool {
        errorText.localizedCaseInsensitiveContains("cluster support disabled")
    }
}
