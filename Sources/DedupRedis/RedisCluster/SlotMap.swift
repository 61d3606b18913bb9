import Dedup

/// A cluster node's address as the cluster names it (`CLUSTER SLOTS`, `MOVED`, `ASK`).
package struct ClusterNodeAddress: Hashable, Sendable, CustomStringConvertible {
    package var host: String
    package var port: Int

    package init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (the last colon splits, so an IPv6 host needs no brackets).
    package init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    package var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Which primary serves each hash slot, as `CLUSTER SLOTS` tells it.
package struct SlotMap: Sendable, Equatable {
    /// The primaries, in the order they were first named.
    package private(set) var primaries: [ClusterNodeAddress] = []
    /// Every node the map names, primaries first, then replicas: where to ask for a newer map.
    package private(set) var nodes: [ClusterNodeAddress] = []
    /// For each slot, the index of its primary in ``primaries``, or `noOwner`.
    private var owners = [UInt16](repeating: SlotMap.noOwner, count: ClusterSlot.count)
    private static let noOwner = UInt16.max

    /// The index in ``primaries`` of the primary serving `slot`, `nil` when none does.
    package func primaryIndex(forSlot slot: Int) -> Int? {
        let owner = owners[slot]
        return owner == Self.noOwner ? nil : Int(owner)
    }

    /// How many slots have a primary.
    package var coveredSlots: Int { owners.count { $0 != Self.noOwner } }

    /// Reads a `CLUSTER SLOTS` reply; `askedNode` stands for a node named with an empty or `?`
    /// address (a node only knows itself by the address it was reached at).
    ///
    /// - Throws: ``/Dedup/DedupError/Code/storeError`` for a reply that is not a slot map.
    package init(clusterSlots reply: RedisReply, askedNode: ClusterNodeAddress) throws(DedupError) {
        func malformed() -> DedupError {
            DedupError(.storeError, "Redis at \(askedNode) answered CLUSTER SLOTS with something else: \(reply)")
        }
        guard let ranges = reply.arrayValue else { throw malformed() }
        var indexes: [ClusterNodeAddress: UInt16] = [:]
        var replicas: [ClusterNodeAddress] = []
        for range in ranges {
            guard let parts = range.arrayValue, parts.count >= 3, let first = parts[0].integerValue,
                let last = parts[1].integerValue,
                first >= 0, first <= last, last < ClusterSlot.count, let node = parts[2].arrayValue, node.count >= 2,
                let host = node[0].stringValue, let port = node[1].integerValue, (1...65535).contains(port)
            else { throw malformed() }
            let address =
                host.isEmpty || host == "?"
                ? ClusterNodeAddress(host: askedNode.host, port: Int(port))
                : ClusterNodeAddress(host: host, port: Int(port))
            let index: UInt16
            if let known = indexes[address] {
                index = known
            } else {
                index = UInt16(primaries.count)
                indexes[address] = index
                primaries.append(address)
            }
            for slot in Int(first)...Int(last) { owners[slot] = index }
            for replica in parts.dropFirst(3) {
                guard let replica = replica.arrayValue, replica.count >= 2, let host = replica[0].stringValue,
                    let port = replica[1].integerValue, (1...65535).contains(port), !host.isEmpty, host != "?"
                else { continue }
                replicas.append(ClusterNodeAddress(host: host, port: Int(port)))
            }
        }
        var seen = Set(primaries)
        nodes = primaries + replicas.filter { seen.insert($0).inserted }
    }
}

/// A cluster's answer that a key lives elsewhere: `MOVED <slot> <host:port>` (for good: the map is
/// out of date) or `ASK <slot> <host:port>` (for this command only, while the slot migrates).
struct ClusterRedirect: Equatable {
    var target: ClusterNodeAddress
    /// `ASK`: the command goes to `target` once, after `ASKING`.
    var isAsk: Bool

    init(target: ClusterNodeAddress, isAsk: Bool) {
        self.target = target
        self.isAsk = isAsk
    }

    init?(_ reply: RedisReply) {
        guard case .error(let text) = reply else { return nil }
        let isAsk = text.hasPrefix("ASK ")
        guard isAsk || text.hasPrefix("MOVED ") else { return nil }
        let words = text.split(separator: " ")
        guard words.count == 3, Int(words[1]) != nil, let target = ClusterNodeAddress(words[2]) else { return nil }
        self.target = target
        self.isAsk = isAsk
    }
}
