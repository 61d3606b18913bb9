import DedupRedis

/// What `check` makes of a Redis Cluster: each node's role, version, persistence and eviction
/// policy, and the warnings and notices of ``RedisSettingsCheck`` for each, those that several
/// nodes share said once with all their names.
struct RedisClusterCheck {
    var details: [(String, String)] = []
    var warnings: [String] = []
    var notices: [String] = []
    var json: JSONValue

    init(_ nodes: [RedisClusterNodeSettings]) {
        let primaries = nodes.count { $0.isPrimary }
        details.append(("cluster", "\(primaries) primaries, \(nodes.count - primaries) replicas"))
        var warned: [(text: String, nodes: [String])] = []
        var noticed: [(text: String, nodes: [String])] = []
        func note(_ text: String, _ node: String, in list: inout [(text: String, nodes: [String])]) {
            if let index = list.firstIndex(where: { $0.text == text }) {
                list[index].nodes.append(node)
            } else {
                list.append((text, [node]))
            }
        }
        var entries: [JSONValue] = []
        for node in nodes {
            let role = node.isPrimary ? "primary" : "replica"
            if let failure = node.failure {
                details.append(("node \(node.address)", "\(role), not reachable"))
                note("could not be asked: \(failure)", node.address, in: &warned)
                entries.append(
                    .object([
                        ("address", .string(node.address)), ("role", .string(role)), ("failure", .string(failure)),
                    ])
                )
                continue
            }
            let assessment = RedisSettingsCheck(node.settings)
            let summary = assessment.details.map { "\($0.0) \($0.1)" }.joined(separator: "; ")
            details.append(("node \(node.address)", "\(role); \(summary)"))
            for warning in assessment.warnings { note(warning, node.address, in: &warned) }
            for notice in assessment.notices { note(notice, node.address, in: &noticed) }
            entries.append(
                .object([("address", .string(node.address)), ("role", .string(role)), ("settings", assessment.json)])
            )
        }
        warnings = warned.map { "\(Self.names($0.nodes)): \($0.text)" }
        notices = noticed.map { "\(Self.names($0.nodes)): \($0.text)" }
        json = .object([("cluster_nodes", .array(entries))])
    }

    private static func names(_ nodes: [String]) -> String {
        (nodes.count == 1 ? "node " : "nodes ") + nodes.joined(separator: ", ")
    }
}
