import Dedup

/// One node of a Redis Cluster with its settings, as ``RedisDedupStore/clusterNodeSettings()``
/// reads them: every primary and replica must keep records through restarts and memory pressure,
/// since any replica may become a primary.
public struct RedisClusterNodeSettings: Sendable, Hashable {
    /// The node's address as the cluster names it, `host:port`.
    public var address: String
    /// Whether the node serves slots (a primary) or copies a primary (a replica), as the slot map
    /// says.
    public var isPrimary: Bool
    /// The node's version, persistence and eviction settings.
    public var settings: RedisServerSettings
    /// Why the node could not be asked (unreachable, refused the login); its settings are then
    /// empty.
    public var failure: String?

    /// Creates a node's entry.
    public init(address: String, isPrimary: Bool, settings: RedisServerSettings, failure: String? = nil) {
        self.address = address
        self.isPrimary = isPrimary
        self.settings = settings
        self.failure = failure
    }
}

extension RedisDedupStore {
    /// On a Redis Cluster, every node's role and settings (``serverSettings()`` asked of each,
    /// primaries first); on a single server, an empty array.
    ///
    /// - Throws: ``/Dedup/DedupError`` when the URL's server cannot be reached or refuses the login.
    public func clusterNodeSettings() async throws -> [RedisClusterNodeSettings] {
        try await resolveTopology()
        guard isCluster else { return [] }
        // `CLUSTER NODES`, not the slot map: `CLUSTER SLOTS` leaves out replicas it takes for not
        // yet usable, and a check wants every node.
        let reply = try await cluster.execute([RedisCommand("CLUSTER", "NODES")], mayRunInline: false)[0]
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let table = reply.stringValue else { throw unexpected(reply, doing: "CLUSTER NODES") }
        var entries: [RedisClusterNodeSettings] = []
        for (node, isPrimary) in Self.clusterNodes(table) {
            do throws(DedupError) {
                let replies = try await cluster.execute(Self.serverSettingsCommands, on: node)
                entries.append(
                    .init(address: node.description, isPrimary: isPrimary, settings: Self.serverSettings(from: replies))
                )
            } catch {
                entries.append(
                    .init(address: node.description, isPrimary: isPrimary, settings: .init(), failure: error.message)
                )
            }
        }
        return entries.sorted { ($0.isPrimary ? 0 : 1, $0.address) < ($1.isPrimary ? 0 : 1, $1.address) }
    }

    /// The nodes a `CLUSTER NODES` table names (`<id> <host:port@bus> <flags> …` a line), each with
    /// whether it is a primary; nodes without an address yet are left out.
    static func clusterNodes(_ table: String) -> [(ClusterNodeAddress, Bool)] {
        table.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 3,
                let address = fields[1].split(separator: "@").first.flatMap({ ClusterNodeAddress($0) })
            else { return nil }
            let flags = fields[2].split(separator: ",")
            if flags.contains("noaddr") || flags.contains("handshake") { return nil }
            return (address, flags.contains("master"))
        }
    }
}
