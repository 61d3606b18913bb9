import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// A real cluster changing under running consumers: a replica taking over by `CLUSTER FAILOVER`,
/// slots migrated by `redis-cli --cluster reshard`, a primary killed and its replica promoted.
/// One cluster (three primaries, a replica each) serves the three scenarios, in that order.
/// (A `TimingTests` suite: failover waits on the cluster's real node timeout.)
@Suite("Redis Cluster failover and resharding")
struct RedisClusterFailoverTimingTests {
    @Test func survivesFailoverReshardingAndALostPrimary() async throws {
        try await withRedisCluster { cluster in
            try await manualFailoverMidRun(cluster)
            try await reshardingMidRun(cluster)
            try await killedPrimaryFailsClosedThenRecovers(cluster)
        }
    }

    /// Three worker processes run while a replica takes over its primary (`CLUSTER FAILOVER`, which
    /// waits for the replica to catch up): calls to the old primary are redirected or fail typed
    /// (the workers retry those), and every key runs exactly once.
    private func manualFailoverMidRun(_ cluster: RedisCluster) async throws {
        let (_, replica) = try await cluster.primaryAndReplica(forKey: "anything")
        let replicaServer = try #require(replica)
        try await runFleet(cluster, namespace: "failover", keys: 3000) {
            _ = try await replicaServer.cli("CLUSTER", "FAILOVER")
            try await waitUntil("the replica is a primary") {
                (try? await replicaServer.cli("ROLE"))?.hasPrefix("master") == true
            }
        }
        try await cluster.waitUntilHealthy()
    }

    /// Three worker processes run while five hundred slots move from one primary to another:
    /// `ASK` and `MOVED` are followed and every key runs exactly once.
    private func reshardingMidRun(_ cluster: RedisCluster) async throws {
        let primaries = try await cluster.states().filter(\.isPrimary)
        let source = primaries[0]
        let target = primaries[1]
        try await runFleet(cluster, namespace: "reshard", keys: 4000) {
            _ = try await source.server.cli(arguments: [
                "--cluster", "reshard", "127.0.0.1:\(source.server.port!)", "--cluster-from", source.id, "--cluster-to",
                target.id,
                "--cluster-slots", "500", "--cluster-yes", "--cluster-pipeline", "20",
            ])
        }
        try await cluster.waitUntilHealthy()
        let moved = try await cluster.states().first { $0.id == target.id }
        #expect(slotCount(moved?.slots ?? []) == slotCount(target.slots) + 500, "the target primary took the slots")
    }

    /// A primary is killed: calls for its slots fail typed (never a wrong answer) until its replica
    /// is promoted, then the same store object serves them again, without a restart.
    private func killedPrimaryFailsClosedThenRecovers(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "killed", commandTimeout: .milliseconds(500))
        let (primary, replica) = try await cluster.primaryAndReplica(forKey: "killed:6:orders:k0")
        let replicaServer = try #require(replica)
        let lease = try #require(try await store.claim(request(id("orders", "k0"))).lease)
        try await store.complete(Completion(lease: lease, retention: .seconds(3600)))
        // The completion reaches the replica before the kill: this test is about availability, not
        // the asynchronous replication window (which the documentation states).
        _ = try await primary.cli("WAIT", "1", "2000")
        await primary.kill()

        var failures: [DedupError.Code] = []
        try await waitUntil("the store serves the lost primary's slots again") {
            do {
                let answer = try await store.claim(request(id("orders", "k0")))
                #expect(answer.kind == "duplicate", "the completed record survived the failover")
                return true
            } catch let error as DedupError {
                #expect([.storeUnavailable, .timeout].contains(error.code), "\(error)")
                failures.append(error.code)
                return false
            }
        }
        #expect(!failures.isEmpty, "the store failed closed while the slots were down")
        #expect((try? await replicaServer.cli("ROLE"))?.hasPrefix("master") == true)
        // The other primaries may still answer CLUSTERDOWN until gossip tells them of the
        // promotion; a key of their slots is served once every node sees the cluster whole again.
        try await cluster.waitUntilHealthy()
        #expect(try await store.claim(request(id("orders", "k-new"))).kind == "acquired")
        await store.close()
    }

    /// Runs three workers on the cluster and `change` once the ledger shows they are under way,
    /// then checks that the change completed while they still ran and that every key ran exactly
    /// once.
    private func runFleet(
        _ cluster: RedisCluster,
        namespace: String,
        keys: Int,
        during change: @escaping @Sendable () async throws -> Void
    ) async throws {
        let ledger = WorkerFleet.temporaryLedgerPath()
        let finished = Mutex(false)
        let fleet = Task {
            defer { finished.withLock { $0 = true } }
            return try await WorkerFleet.run(
                processes: 3,
                store: cluster.url,
                keys: keys,
                extraArguments: [
                    "--namespace", namespace, "--rounds", "3", "--batch", "10", "--handler-us", "300",
                    "--retry-unavailable", "yes",
                ],
                ledger: ledger
            )
        }
        try await waitUntil("the workers are under way") { WorkerFleet.linesSoFar(in: ledger) >= keys / 10 }
        try await change()
        let ranThroughTheChange = !finished.withLock { $0 }
        let result = try await fleet.value
        #expect(ranThroughTheChange, "the change completed while the workers still ran")
        #expect(result.runsPerKey.count == keys, "every key ran: \(result.summaries)")
        let repeated = result.runsPerKey.filter { $0.value != 1 }
        #expect(repeated.isEmpty, "keys that ran more than once: \(repeated.prefix(10)); \(result.summaries)")
    }

    private func slotCount(_ ranges: [String]) -> Int {
        ranges.reduce(0) { total, range in
            let bounds = range.split(separator: "-").compactMap { Int($0) }
            guard let first = bounds.first else { return total }
            return total + (bounds.last ?? first) - first + 1
        }
    }

    private func waitUntil(
        _ what: String,
        timeout: Duration = .seconds(60),
        _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RedisServer.Failure(description: "timed out waiting until \(what)")
    }
}
