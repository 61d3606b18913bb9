import Dedup
import DedupTestSupport
import Foundation
import Testing

@testable import DedupRedis

/// The store on a real three-primary cluster (a replica each) that the suite starts: one cluster
/// for the whole suite, each scenario with a key prefix of its own.
@Suite("Redis store on a Redis Cluster")
struct RedisClusterTests {
    @Test func routesEveryCallByHashSlot() async throws {
        try await withRedisCluster { cluster in
            try await claimsSpreadOverThePrimaries(cluster)
            try await slotsAgreeWithTheServer(cluster)
            try await batchesAnswerAsOneByOneCallsWould(cluster)
            try await batchLeasesEndNoLaterThanTheirRecords(cluster)
            try await hashTaggedCompletionsShareOneScript(cluster)
            try await batchCompletionsTakeOneScriptPerPrimary(cluster)
            try await completionsOfMovedKeysGoBySlot(cluster)
            try await followsAskAndMovedThroughAMigration(cluster)
            try await logsInAsAnACLUserOnEveryNode(cluster)
            try await aDatabaseNumberIsRefused(cluster)
            try await seedNodesAreAskedInTurn(cluster)
            try await singleServersAreNotTakenForClusters()
            try await executorTasksCallThroughThePrimariesConnections(cluster)
        }
    }

    /// Claims of keys all over the slots, found on all three primaries, none refused with `MOVED`.
    private func claimsSpreadOverThePrimaries(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "spread")
        var leases: [Lease] = []
        for index in 0..<300 {
            guard case .acquired(let lease) = try await store.claim(request(id("orders", "k\(index)"))) else {
                Issue.record("k\(index) was not acquired")
                return
            }
            leases.append(lease)
        }
        #expect(store.isCluster)
        for lease in leases { try await store.complete(Completion(lease: lease, retention: .seconds(3600))) }
        for index in 0..<300 {
            #expect(try await store.claim(request(id("orders", "k\(index)"))).kind == "duplicate")
        }
        let primaries = try await cluster.states().filter(\.isPrimary)
        #expect(primaries.count == 3)
        var total = 0
        for primary in primaries {
            let keys = Int(try await primary.server.cli("EVAL", "return #redis.call('KEYS', 'spread:*')", "0")) ?? 0
            #expect(keys > 50, "each primary holds some of the keys")
            total += keys
        }
        #expect(total == 300)
        #expect(try await store.stats().namespaces.first?.completed == 300)
        await store.close()
    }

    /// The store's hash slot of a record's key is the one the server computes.
    private func slotsAgreeWithTheServer(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "slots")
        for key in ["a", "b", "orders-42", "{tag}x", "x{tag}", "ünïcode", "emoji 🦆"] {
            let redisKey = store.key(for: id("ns", key))
            let expected = Int(
                try await cluster.nodes[0].cli("CLUSTER", "KEYSLOT", String(decoding: redisKey, as: UTF8.self))
            )
            #expect(ClusterSlot.slot(of: redisKey) == expected, "slot of \(key)")
        }
        await store.close()
    }

    /// A batch across every primary: one pipeline per primary, the answers in the batch's order,
    /// as one-by-one calls would give them.
    private func batchesAnswerAsOneByOneCallsWould(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "batch")
        let ids = (0..<60).map { id("orders", "b\($0)") }
        // Every third key is done before the batch, every fifth in flight.
        for (index, recordID) in ids.enumerated() where index % 3 == 0 {
            let lease = try #require(try await store.claim(request(recordID)).lease)
            try await store.complete(Completion(lease: lease, retention: .seconds(3600)))
        }
        for (index, recordID) in ids.enumerated() where index % 5 == 0 && index % 3 != 0 {
            _ = try await store.claim(request(recordID))
        }
        let answers = try await store.claim(batch: ids.map { request($0) })
        for (index, answer) in answers.enumerated() {
            let expected = index % 3 == 0 ? "duplicate" : index % 5 == 0 ? "inFlight" : "acquired"
            #expect(answer.kind == expected, "answer \(index)")
            #expect(answer.lease.map(\.id) ?? answer.record?.id == ids[index])
        }
        let leases = answers.compactMap(\.lease)
        let completed = try await store.complete(batch: leases.map { Completion(lease: $0, retention: .seconds(3600)) })
        #expect(completed.count == leases.count)
        #expect(completed.allSatisfy { $0 == .completed })
        for lease in leases { #expect(try await store.record(for: lease.id)?.state == .completed) }
        await store.close()
    }

    /// A batch claim's leases are dated by one `TIME`, which must come before the writes on every
    /// primary: no lease may end after its record's lease, nor start after its record was made.
    private func batchLeasesEndNoLaterThanTheirRecords(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "dated")
        var late: [String] = []
        for round in 0..<20 {
            // Concurrent batches keep every primary busy, so pipelines finish in any order.
            try await withThrowingTaskGroup(of: [String].self) { group in
                for batch in 0..<4 {
                    group.addTask {
                        let ids = (0..<30).map { id("orders", "r\(round)-b\(batch)-\($0)") }
                        var late: [String] = []
                        for answer in try await store.claim(batch: ids.map { request($0) }) {
                            let lease = try #require(answer.lease)
                            let record = try #require(try await store.record(for: lease.id))
                            if lease.leaseUntil > record.leaseUntil!
                                || (lease.claimedAt.map { $0 > record.createdAt } ?? false)
                            {
                                late.append(
                                    "\(lease.id.key): lease until \(lease.leaseUntil), record's \(record.leaseUntil!)"
                                )
                            }
                        }
                        return late
                    }
                }
                for try await found in group { late += found }
            }
        }
        #expect(late.isEmpty, "\(late.count) leases dated after their records: \(late.prefix(3))")
        await store.close()
    }

    /// Keys with one hash tag lie in one slot: their completions go in one call of the script.
    private func hashTaggedCompletionsShareOneScript(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "{tagged}")
        let answers = try await store.claim(batch: (0..<20).map { request(id("orders", "t\($0)")) })
        let leases = answers.compactMap(\.lease)
        #expect(leases.count == 20)
        let before = try await commandCalls(cluster, "evalsha")
        let completed = try await store.complete(batch: leases.map { Completion(lease: $0, retention: .seconds(3600)) })
        #expect(completed.allSatisfy { $0 == .completed })
        #expect(try await commandCalls(cluster, "evalsha") - before == 1, "one script call for the twenty keys")
        await store.close()
    }

    /// A batch of keys in many slots: its completion is one call of the script per primary (keys
    /// of several slots of that primary's in one call), not one per slot.
    private func batchCompletionsTakeOneScriptPerPrimary(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "pernode")
        let answers = try await store.claim(batch: (0..<100).map { request(id("orders", "n\($0)")) })
        let leases = answers.compactMap(\.lease)
        #expect(leases.count == 100)
        let before = try await commandCalls(cluster, "evalsha")
        let completed = try await store.complete(batch: leases.map { Completion(lease: $0, retention: .seconds(3600)) })
        #expect(completed == Array(repeating: .completed, count: 100))
        // The first call on each primary may load the script (`NOSCRIPT`, then `SCRIPT LOAD` and
        // the call again).
        let calls = try await commandCalls(cluster, "evalsha") - before
        #expect((3...6).contains(calls), "one script call per primary, not \(calls)")
        for lease in leases { #expect(try await store.record(for: lease.id)?.state == .completed) }
        // Loaded everywhere: three calls. After `SCRIPT FLUSH` on every node: each primary answers
        // `NOSCRIPT`, loads the script and runs the call again, six calls.
        for (round, expected) in [(1, 3), (2, 6), (3, 3)] {
            let again = try await store.claim(
                batch: (100 * round..<100 * round + 100).map { request(id("orders", "n\($0)")) }
            )
            if round == 2 {
                for node in cluster.nodes { _ = try await node.cli("SCRIPT", "FLUSH") }
            }
            let beforeAgain = try await commandCalls(cluster, "evalsha")
            let completedAgain = try await store.complete(
                batch: again.compactMap(\.lease).map { Completion(lease: $0, retention: .seconds(3600)) }
            )
            #expect(completedAgain == Array(repeating: .completed, count: 100), "round \(round)")
            let calls = try await commandCalls(cluster, "evalsha") - beforeAgain
            #expect(calls == expected, "round \(round): \(calls) calls")
        }
        await store.close()
    }

    /// A batch's completion on the primary the store's map names, for a key that node no longer
    /// serves: moved away mid-migration (`ASK`), then with its slot moved (`MOVED`). The script
    /// completes the node's other keys, and the moved key is completed by its slot, where it is.
    private func completionsOfMovedKeysGoBySlot(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "gone")
        for (tag, finished) in [("g", false), ("h", true)] {
            let moving = id("orders", "{\(tag)}moving")
            let movingKey = String(decoding: store.key(for: moving), as: UTF8.self)
            let slot = ClusterSlot.slot(of: store.key(for: moving))
            let (source, _) = try await cluster.primaryAndReplica(forKey: movingKey)
            // Keys on the same primary in other slots, so they share the moving key's call.
            var neighbours: [RecordID] = []
            var index = 0
            while neighbours.count < 5 {
                let candidate = id("orders", "\(tag)-\(index)")
                let key = String(decoding: store.key(for: candidate), as: UTF8.self)
                if ClusterSlot.slot(of: store.key(for: candidate)) != slot,
                    try await cluster.primaryAndReplica(forKey: key).primary.port == source.port
                {
                    neighbours.append(candidate)
                }
                index += 1
            }
            let states = try await cluster.states()
            let sourceState = try #require(states.first { $0.server.port == source.port })
            let target = try #require(states.first { $0.isPrimary && $0.id != sourceState.id })
            let claimed = try await store.claim(batch: ([moving] + neighbours).map { request($0) })
            #expect(claimed.allSatisfy { $0.kind == "acquired" })

            _ = try await target.server.cli("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceState.id)
            _ = try await source.cli("CLUSTER", "SETSLOT", String(slot), "MIGRATING", target.id)
            _ = try await source.cli(
                "MIGRATE",
                "127.0.0.1",
                String(target.server.port!),
                "",
                "0",
                "5000",
                "KEYS",
                movingKey
            )
            if finished {
                for node in states where node.isPrimary {
                    _ = try await node.server.cli("CLUSTER", "SETSLOT", String(slot), "NODE", target.id)
                }
            }
            let askingBefore = try await commandCalls(cluster, "asking")
            let completed = try await store.complete(
                batch: claimed.compactMap(\.lease).map { Completion(lease: $0, retention: .seconds(3600)) }
            )
            #expect(completed == Array(repeating: .completed, count: 6), "\(finished ? "MOVED" : "ASK")")
            let askings = try await commandCalls(cluster, "asking") - askingBefore
            #expect(askings == (finished ? 0 : 1), "the moved key followed \(finished ? "MOVED" : "an ASK")")
            for recordID in [moving] + neighbours {
                #expect(try await store.record(for: recordID)?.state == .completed, "\(recordID.key)")
            }
            if !finished {
                for node in states where node.isPrimary {
                    _ = try await node.server.cli("CLUSTER", "SETSLOT", String(slot), "NODE", target.id)
                }
            }
        }
        await store.close()
    }

    /// A slot migrated by hand, step by step: while it migrates, a key already moved is found with
    /// `ASK` (`ASKING`, then the command on the importing node), and so is a new key; once the slot
    /// has moved, the store's stale map gets `MOVED` and follows it.
    private func followsAskAndMovedThroughAMigration(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "ask")
        let moved = id("orders", "{m}done")
        let fresh = id("orders", "{m}new")
        let lease = try #require(try await store.claim(request(moved)).lease)
        try await store.complete(Completion(lease: lease, retention: .seconds(3600)))
        let movedKey = String(decoding: store.key(for: moved), as: UTF8.self)
        let slot = ClusterSlot.slot(of: store.key(for: moved))
        let states = try await cluster.states()
        let (source, _) = try await cluster.primaryAndReplica(forKey: movedKey)
        let sourceState = try #require(states.first { $0.server.port == source.port })
        let target = try #require(states.first { $0.isPrimary && $0.id != sourceState.id })
        _ = try await target.server.cli("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceState.id)
        _ = try await source.cli("CLUSTER", "SETSLOT", String(slot), "MIGRATING", target.id)
        _ = try await source.cli("MIGRATE", "127.0.0.1", String(target.server.port!), "", "0", "5000", "KEYS", movedKey)

        let askingBefore = try await commandCalls(cluster, "asking")
        #expect(try await store.claim(request(moved)).kind == "duplicate", "found on the importing node")
        #expect(try await store.claim(request(fresh)).kind == "acquired", "created on the importing node")
        #expect(try await commandCalls(cluster, "asking") - askingBefore == 2, "both followed an ASK")

        for node in states where node.isPrimary {
            _ = try await node.server.cli("CLUSTER", "SETSLOT", String(slot), "NODE", target.id)
        }
        #expect(try await store.record(for: moved)?.state == .completed, "MOVED followed")
        #expect(try await store.record(for: fresh)?.state == .inFlight)
        #expect(try await target.server.cli("CLUSTER", "COUNTKEYSINSLOT", String(slot)) == "2")
        await store.close()
    }

    /// The URL's user and password log in on every node the store reaches, not only the seed; a
    /// wrong password is refused as on a single server.
    private func logsInAsAnACLUserOnEveryNode(_ cluster: RedisCluster) async throws {
        for node in cluster.nodes {
            _ = try await node.cli("ACL", "SETUSER", "billing", "on", ">s3cret", "~acl:*", "+@all")
        }
        let port = cluster.nodes[0].port!
        let store = try makeRedisStore("redis://billing:s3cret@127.0.0.1:\(port)", prefix: "acl")
        let answers = try await store.claim(batch: (0..<30).map { request(id("orders", "a\($0)")) })
        #expect(answers.allSatisfy { $0.kind == "acquired" })
        #expect(store.isCluster)
        var users = 0
        for primary in try await cluster.states().filter(\.isPrimary) {
            users += try await primary.server.cli("CLIENT", "LIST").split(whereSeparator: \.isNewline).count {
                $0.contains("user=billing")
            }
        }
        #expect(users >= 3, "the store logged in as billing on every primary")
        await store.close()

        let refused = try makeRedisStore("redis://billing:wrong@127.0.0.1:\(port)", prefix: "acl")
        await expectDedupError(.authenticationFailed) { _ = try await refused.claim(request(id("orders", "a0"))) }
        await refused.close()
    }

    /// Several seed nodes: the first down, the next answers; none answering is a typed error
    /// naming each seed tried, without the password; a seed that is not a cluster node is refused.
    private func seedNodesAreAskedInTurn(_ cluster: RedisCluster) async throws {
        for node in cluster.nodes {
            _ = try await node.cli("ACL", "SETUSER", "seeder", "on", ">t0psecret", "~seed:*", "+@all")
        }
        let down = [try RedisServer.freePort(), try RedisServer.freePort()]
        let live = cluster.nodes[1].port!
        let store = try makeRedisStore(
            "redis://seeder:t0psecret@127.0.0.1:\(down[0]),127.0.0.1:\(live)",
            prefix: "seed"
        )
        let answers = try await store.claim(batch: (0..<30).map { request(id("orders", "s\($0)")) })
        #expect(answers.allSatisfy { $0.kind == "acquired" })
        #expect(store.isCluster)
        let completed = try await store.complete(
            batch: answers.compactMap(\.lease).map { Completion(lease: $0, retention: .seconds(3600)) }
        )
        #expect(completed.allSatisfy { $0 == .completed })
        await store.close()

        let unreachable = try makeRedisStore(
            "redis://seeder:t0psecret@127.0.0.1:\(down[0]),127.0.0.1:\(down[1])",
            prefix: "seed"
        )
        let error = await expectDedupError(.storeUnavailable) {
            _ = try await unreachable.claim(request(id("orders", "s0")))
        }
        #expect(error?.message.contains("127.0.0.1:\(down[0])") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("127.0.0.1:\(down[1])") == true)
        #expect(error?.message.contains("t0psecret") == false)
        await unreachable.close()

        // A seed that refuses `CLUSTER SLOTS` to this user (an ACL, a proxy) is not taken for a
        // server without cluster support: the next seed is asked.
        let refusing = cluster.nodes[0]
        _ = try await refusing.cli("ACL", "SETUSER", "seeder", "-cluster|slots")
        let pastRefusal = try makeRedisStore(
            "redis://seeder:t0psecret@127.0.0.1:\(refusing.port!),127.0.0.1:\(live)",
            prefix: "seed"
        )
        #expect(try await pastRefusal.claim(request(id("orders", "past-refusal"))).kind == "acquired")
        #expect(pastRefusal.isCluster)
        await pastRefusal.close()
        let allRefusing = try makeRedisStore(
            "redis://seeder:t0psecret@127.0.0.1:\(refusing.port!),127.0.0.1:\(down[0])",
            prefix: "seed"
        )
        let refused = await expectDedupError(.invalidConfiguration) {
            _ = try await allRefusing.claim(request(id("orders", "s0")))
        }
        #expect(refused?.message.contains("NOPERM") == true, "\(refused?.message ?? "")")
        #expect(refused?.message.contains("127.0.0.1:\(down[0])") == true)
        await allRefusing.close()
        _ = try await refusing.cli("ACL", "SETUSER", "seeder", "+cluster|slots")

        try await withRedisServer { single in
            let mixed = try makeRedisStore("redis://127.0.0.1:\(down[0]),127.0.0.1:\(single.port!)", prefix: "seed")
            await expectDedupError(.invalidConfiguration) { _ = try await mixed.claim(request(id("orders", "s0"))) }
            await mixed.close()
        }
    }

    /// A cluster has one database: a URL naming another is refused, clearly.
    private func aDatabaseNumberIsRefused(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url + "/2", prefix: "db")
        await expectDedupError(.invalidConfiguration) { _ = try await store.claim(request(id("orders", "1"))) }
        await store.close()
    }

    /// Tasks preferring the store's executor (the seed connection's thread) are answered, and
    /// their calls go through the primaries' connections: the seed connection only read the map.
    private func executorTasksCallThroughThePrimariesConnections(_ cluster: RedisCluster) async throws {
        let store = try makeRedisStore(cluster.url, prefix: "executor", poolSize: 1)
        _ = try await store.claim(request(id("orders", "first")))
        let seed = store.seedPool.connections[0]
        let unitsAfterDiscovery = seed.unitsSent.load(ordering: .relaxed)
        let acquired = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<4 {
                group.addTask(executorPreference: store.taskExecutor) {
                    var acquired = 0
                    for index in 0..<25
                    where try await store.claim(request(id("orders", "t\(task)-\(index)"))).kind == "acquired" {
                        acquired += 1
                    }
                    return acquired
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(acquired == 100)
        #expect(seed.unitsSent.load(ordering: .relaxed) == unitsAfterDiscovery)
        await store.close()
    }

    /// A single server answers `CLUSTER SLOTS` with an error: the store stays a single-server store.
    private func singleServersAreNotTakenForClusters() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            #expect(try await store.claim(request(id("orders", "1"))).kind == "acquired")
            #expect(!store.isCluster)
            await store.close()
        }
    }

    /// Calls of `command` so far on all the cluster's nodes (`INFO commandstats`).
    private func commandCalls(_ cluster: RedisCluster, _ command: String) async throws -> Int {
        var total = 0
        for node in cluster.nodes {
            let stats = try await node.cli("INFO", "commandstats")
            guard
                let line = stats.split(whereSeparator: \.isNewline).first(where: {
                    $0.hasPrefix("cmdstat_\(command):calls=")
                })
            else { continue }
            total += Int(line.dropFirst("cmdstat_\(command):calls=".count).prefix(while: \.isNumber)) ?? 0
        }
        return total
    }
}
