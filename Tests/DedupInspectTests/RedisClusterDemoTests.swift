import DedupTestSupport
import Foundation
import Testing

/// `dedup-demo` (the built binary) on a real Redis Cluster (three primaries, a replica each).
@Suite("dedup-demo on a Redis Cluster")
struct RedisClusterDemoTests {
    @Test("the demo on a cluster URL is exactly once, and its removal command removes its keys on every primary")
    func exactlyOnceOnACluster() async throws {
        try await withRedisCluster { cluster in
            let run = try await runProcess(
                try BuiltExecutables.path("dedup-demo"),
                ["--messages", "2000", "--crash-rate", "0", "--store", cluster.url]
            )
            #expect(run.status == 0, "exit \(run.status): \(run.errors.prefix(500))")
            #expect(run.errors.isEmpty, "standard error: \(run.errors.prefix(500))")
            let lines = run.output.split(separator: "\n")
            #expect(lines.last == "exactly once: yes", "\(run.output)")

            let remove = try #require(
                lines.first { $0.hasPrefix("remove it: ") }.map { String($0.dropFirst("remove it: ".count)) },
                "\(run.output)"
            )
            let data = try #require(lines.first { $0.hasPrefix("data: ") }, "\(run.output)")
            let pattern = try #require(data.split(separator: " ").last.map(String.init))
            #expect(try await keys(pattern, in: cluster) == 2000)
            // The printed command names dedup-inspect, as installed beside dedup-demo.
            let binaries = try BuiltExecutables.path("dedup-inspect").split(separator: "/").dropLast().joined(
                separator: "/"
            )
            let removal = try await runProcess("/bin/sh", ["-c", "PATH=/\(binaries):$PATH " + remove])
            #expect(removal.status == 0, "\(remove): \(removal.errors)")
            #expect(try await keys(pattern, in: cluster) == 0, "\(remove)")
        }
    }

    /// Keys matching `pattern` on all the primaries.
    private func keys(_ pattern: String, in cluster: RedisCluster) async throws -> Int {
        var total = 0
        for primary in try await cluster.states().filter(\.isPrimary) {
            let found = try await primary.server.cli("--scan", "--pattern", pattern)
            total += found.split(separator: "\n").count
        }
        return total
    }
}
