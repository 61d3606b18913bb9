import DedupTestSupport
import Foundation
import Testing

/// `dedup-inspect` (the built binary) against a real Redis Cluster (three primaries, a replica
/// each) that the suite starts once.
@Suite("dedup-inspect on a Redis Cluster")
struct RedisClusterInspectTests {
    @Test("every subcommand works on a cluster; check reports each node")
    func subcommandsAndCheck() async throws {
        try await withRedisCluster { cluster in
            // stats, list (one cursor over every primary), show, forget, reset and purge.
            try await RedisInspectTests().subcommands(url: cluster.url)

            let check = try await InspectBinary.run(["check", "--store", cluster.url, "--format", "json"])
            // The test cluster keeps nothing on disk: every node is warned about, exit 6.
            #expect(check.status == 6, "\(check.stderr)")
            let document = try check.json()
            let nodes = document.object("server")?["cluster_nodes"] as? [[String: Any]] ?? []
            #expect(nodes.count == 6)
            #expect(nodes.count { $0.string("role") == "primary" } == 3)
            #expect(nodes.count { $0.string("role") == "replica" } == 3)
            #expect(nodes.allSatisfy { ($0.object("settings")?.string("version") ?? "").hasPrefix("7.") })
            let text = try await InspectBinary.run(["check", "--store", cluster.url])
            #expect(text.stdout.contains("3 primaries, 3 replicas"), "\(text.stdout)")
            for node in cluster.nodes {
                #expect(text.stdout.contains("127.0.0.1:\(node.port!)"), "node \(node.port!) is reported")
            }

            // Seed nodes, the first down: the next answers, for every subcommand as for the store.
            let seeds = "redis://127.0.0.1:\(try RedisServer.freePort()),127.0.0.1:\(cluster.nodes[2].port!)"
            let seeded = try await InspectBinary.run(["check", "--store", seeds])
            #expect(seeded.status == 6, "\(seeded.stderr)")
            #expect(seeded.stdout.contains("3 primaries, 3 replicas"), "\(seeded.stdout)")
            let stats = try await InspectBinary.run(["stats", "--store", seeds])
            #expect(stats.status == 0, "\(stats.stderr)")
        }
    }
}
