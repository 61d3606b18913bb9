import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Synchronization
import Testing

@Suite("RedisDedupStore on a real redis-server")
struct RedisDedupStoreTests {
    @Test("claim, in flight, complete, duplicate with result; one string per record readable with redis-cli")
    func lifecycleAndLayout() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("orders-group", "order-42")
            let first = try await store.claim(
                ClaimRequest(
                    id: record,
                    lease: .seconds(30),
                    retention: .seconds(3600),
                    fingerprint: "fp-1",
                    ownerLabel: "web 7:31337"
                )
            )
            let lease = try #require(first.lease)
            #expect(lease.fencingToken == 1 && lease.attempt == 1 && !lease.isTakeover)

            let second = try await store.claim(request(record))
            #expect(second.kind == "inFlight")
            #expect(second.record?.ownerToken == lease.ownerToken)

            // The layout a person reads with redis-cli.
            let keys = try await server.cli("--scan", "--pattern", "dedup:*")
            #expect(keys == "dedup:12:orders-group:order-42")
            #expect(try await server.cli("TYPE", keys) == "string")
            // State, holder (label and token), lease span and retention, fingerprint.
            #expect(
                try await server.cli("GET", keys) == "in_flight 11:web 7:31337 32:\(lease.ownerToken) 30s 1h p4:fp-1"
            )
            // The key expires one millisecond before the record; the lease ends a retention earlier.
            let expiry = try #require(Int64(try await server.cli("PEXPIRETIME", keys)))
            let inFlight = try #require(second.record)
            #expect(inFlight.expiresAt.millisecondsSince1970 == expiry + 1)
            #expect(inFlight.leaseUntil?.millisecondsSince1970 == expiry + 1 - 3_600_000)
            #expect(inFlight.createdAt.millisecondsSince1970 == expiry + 1 - 3_600_000 - 30_000)
            let leaseEarly =
                try #require(inFlight.leaseUntil).millisecondsSince1970 - lease.leaseUntil.millisecondsSince1970
            #expect(leaseEarly >= 0 && leaseEarly < 50, "the lease ends with the record's, or a little earlier")

            try await store.complete(Completion(lease: lease, retention: .seconds(600), result: Data([0, 1, 2, 255])))
            let pttl = try #require(Int(try await server.cli("PTTL", keys)))
            #expect(pttl > 590_000 && pttl <= 600_000)
            // The completed value drops the holder and the lease times and says when the record was
            // first claimed (base 36, as the lease carries it), how long after that it completed and
            // how long it is kept; then the fingerprint and the result. The key expires with it.
            let completedValue = try await server.cli("--no-raw", "GET", keys)
            let claimedAt = try #require(lease.claimedAt).millisecondsSince1970
            let head = "\"done \(String(claimedAt, radix: 36)) "
            #expect(completedValue.hasPrefix(head), "\(completedValue)")
            #expect(completedValue.hasSuffix(#" 10m p4:fp-1 r4:\x00\x01\x02\xff""#), "\(completedValue)")
            let completed = try claimedAt + #require(Int64(completedValue.dropFirst(head.count).prefix { $0 != " " }))
            // The key's last live millisecond is the record's, or a little later if the server's
            // clock moved between the completion's TIME and its SET (never earlier).
            let keyExpiry = try #require(Int64(try await server.cli("PEXPIRETIME", keys)))
            #expect(
                keyExpiry >= completed + 600_000 - 1 && keyExpiry < completed + 600_000 + 1_000,
                "\(keyExpiry) vs \(completed)"
            )

            let third = try await store.claim(request(record))
            guard case .duplicate(let stored) = third else {
                Issue.record("expected duplicate, got \(third)")
                return
            }
            #expect(stored.state == .completed)
            #expect(stored.result == Data([0, 1, 2, 255]))
            #expect(stored.fingerprint == "fp-1")
            #expect(stored.ownerToken == nil && stored.leaseUntil == nil)
            #expect(stored.completedAt?.millisecondsSince1970 == completed)
            #expect(try await store.record(for: record) == stored)

            let mismatch = try await store.claim(request(record, fingerprint: "fp-2"))
            #expect(mismatch.kind == "payloadMismatch")
            await store.close()
        }
    }

    @Test("keys with NUL, colons, newlines and emoji stay distinct and round-trip through listing")
    func binaryKeys() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let ids = [
                id("a:b", "c"), id("a", "b:c"), id("ns", "with\0nul"), id("ns", "with\0nul\0"),
                id("ns", "line\nbreak 🎉"), id("ns*", "[x]?"),
            ]
            for recordID in ids {
                #expect(try await store.claim(request(recordID)).kind == "acquired", "\(recordID)")
            }
            for recordID in ids {
                #expect(try await store.record(for: recordID)?.id == recordID)
            }
            var listed: [RecordID] = []
            var cursor: PageCursor?
            repeat {
                let page = try await store.records(matching: RecordFilter(), after: cursor, limit: 2)
                #expect(page.records.count <= 2)
                listed += page.records.map(\.id)
                cursor = page.next
            } while cursor != nil
            #expect(Set(listed) == Set(ids))
            #expect(listed.count == ids.count)
            let glob = try await store.records(matching: RecordFilter(namespace: "ns*"), after: nil, limit: 10)
            #expect(glob.records.map(\.id) == [id("ns*", "[x]?")])
            let prefixed = try await store.records(
                matching: RecordFilter(namespace: "ns", keyPrefix: "with\0"),
                after: nil,
                limit: 10
            )
            #expect(Set(prefixed.records.map(\.id)) == [id("ns", "with\0nul"), id("ns", "with\0nul\0")])
            await store.close()
        }
    }

    @Test("release, renew and stale owners: leaseLost changes nothing")
    func ownerChecks() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("billing", "p-1")
            let lease = try #require(try await store.claim(request(record, lease: .seconds(10))).lease)
            var stale = lease
            stale.ownerToken = Lease.makeOwnerToken()
            await expectDedupError(.leaseLost) {
                try await store.complete(Completion(lease: stale, retention: .seconds(60)))
            }
            await expectDedupError(.leaseLost) { try await store.release(stale) }
            await expectDedupError(.leaseLost) { _ = try await store.renew(stale, for: .seconds(60)) }
            #expect(try await store.record(for: record)?.state == .inFlight)

            let before = try #require(try await store.record(for: record))
            let renewed = try await store.renew(lease, for: .seconds(60))
            #expect(renewed.leaseUntil > lease.leaseUntil)
            let after = try #require(try await store.record(for: record))
            #expect(after.leaseUntil == renewed.leaseUntil)
            // The distance between lease end and expiry (the retention) is kept.
            #expect(
                after.expiresAt.millisecondsSince1970 - renewed.leaseUntil.millisecondsSince1970
                    == before.expiresAt.millisecondsSince1970 - before.leaseUntil!.millisecondsSince1970
            )

            try await store.release(renewed)
            #expect(try await store.record(for: record) == nil)
            await expectDedupError(.leaseLost) { try await store.release(renewed) }
            let again = try #require(try await store.claim(request(record)).lease)
            #expect(again.fencingToken == 1)
            await store.close()
        }
    }

    @Test("a passed lease is taken over with fencing+1 on the server clock; the old owner loses")
    func takeover() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("billing", "slow")
            _ = try await store.ping()  // connected, so the lease below starts when the claim is sent
            let claimed = ContinuousClock.now
            let first = try #require(try await store.claim(request(record, lease: .milliseconds(2000))).lease)
            let early = try await store.claim(request(record, lease: .milliseconds(2000)))
            if ContinuousClock.now - claimed < .milliseconds(1900) { #expect(early.kind == "inFlight") }
            // The lease is on the server's clock.
            try await Task.sleep(until: claimed + .milliseconds(2100), clock: .continuous)
            let second = try #require(try await store.claim(request(record)).lease)
            #expect(second.isTakeover && second.fencingToken == 2 && second.attempt == 2)
            await expectDedupError(.leaseLost) {
                try await store.complete(Completion(lease: first, retention: .seconds(60)))
            }
            try await store.complete(Completion(lease: second, retention: .seconds(60)))
            #expect(try await store.record(for: record)?.fencingToken == 2)
            await store.close()
        }
    }

    @Test("batch claim and complete answer as one-by-one calls, the same key twice included")
    func batches() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let done = id("ns", "done")
            let doneLease = try #require(try await store.claim(request(done)).lease)
            try await store.complete(Completion(lease: doneLease, retention: .seconds(60)))

            let fresh = id("ns", "fresh")
            let answers = try await store.claim(batch: [
                request(fresh), request(fresh), request(done), request(done), request(id("ns", "other")),
            ])
            #expect(answers.map(\.kind) == ["acquired", "inFlight", "duplicate", "duplicate", "acquired"])

            var stale = try #require(answers[0].lease)
            let good = try #require(answers[4].lease)
            let real = stale
            stale.ownerToken = "not-the-owner"
            let completions = try await store.complete(batch: [
                Completion(lease: stale, retention: .seconds(60)), Completion(lease: real, retention: .seconds(60)),
                Completion(lease: real, retention: .seconds(60)),
                Completion(lease: good, retention: .seconds(60), result: Data("ok".utf8)),
            ])
            #expect(completions == [.leaseLost, .completed, .leaseLost, .completed])
            #expect(try await store.claim(batch: []).isEmpty)
            #expect(try await store.complete(batch: []).isEmpty)
            await store.close()
        }
    }

    @Test(
        "a batch completion takes one script call per run of up to 256 keys with one retention (one per key when configured so); lease lost and unreadable records answer per key",
        arguments: [true, false]
    )
    func batchCompletionCalls(oneScript: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, completesBatchesInOneScript: oneScript)
            let ids = (0..<600).map { id("ns", "k\($0)") }
            let leases = try await store.claim(batch: ids.map { request($0) }).map { try #require($0.lease) }
            var completions = leases.indices.map {
                Completion(lease: leases[$0], retention: .seconds($0 < 300 ? 60 : 120))
            }
            for lost in [5, 450] { completions[lost].lease.ownerToken = "not-the-owner" }
            try await server.cli("CONFIG", "RESETSTAT")
            let answers = try await store.complete(batch: completions)
            #expect(answers == completions.indices.map { [5, 450].contains($0) ? .leaseLost : .completed })
            let stats = try await server.cli("INFO", "commandstats")
            let calls = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_evalsha:") }
            // 0..<256, 256..<300 (the retention changes), 300..<556, 556..<600.
            #expect(
                calls?.hasPrefix("cmdstat_evalsha:calls=\(oneScript ? 4 : 600),") == true,
                "\(calls ?? "no EVALSHA")"
            )
            for (index, retention) in [(0, 60_000.0), (299, 60_000), (300, 120_000), (599, 120_000)] {
                let record = try #require(try await store.record(for: ids[index]))
                let completedAt = try #require(record.completedAt)
                #expect(
                    record.state == .completed && record.expiresAt.timeIntervalSince(completedAt) * 1000 == retention
                )
            }
            #expect(try await store.record(for: ids[5])?.state == .inFlight)

            // A record of ours whose fields cannot be read (in the previous layout and the current),
            // completed by a lease that does not say when it was first claimed (so the script must
            // read them), or by one that does: that key answers with the error, the call throws it,
            // and the batch's other completions are written.
            for (key, value, claimedAt) in [
                ("bad", "in_flight owner=1:t fencing=x", nil), ("bad-current", "in_flight - 1:t 5s", nil),
                ("bad-dated", "in_flight - 1:t 5s", Date()),
            ] {
                try await server.cli("SET", "dedup:2:ns:\(key)", value)
                let bad = Lease(
                    id: id("ns", key),
                    ownerToken: "t",
                    fencingToken: 1,
                    attempt: 1,
                    leaseUntil: Date(),
                    isTakeover: false,
                    claimedAt: claimedAt
                )
                let fresh = try await store.claim(batch: [
                    request(id("ns", "before-\(key)")), request(id("ns", "after-\(key)")),
                ]).map {
                    try #require($0.lease)
                }
                await expectDedupError(.corruptStore) {
                    _ = try await store.complete(batch: [
                        Completion(lease: fresh[0], retention: .seconds(60)),
                        Completion(lease: bad, retention: .seconds(60)),
                        Completion(lease: fresh[1], retention: .seconds(60)),
                    ])
                }
                #expect(try await store.record(for: id("ns", "before-\(key)"))?.state == .completed)
                #expect(try await store.record(for: id("ns", "after-\(key)"))?.state == .completed)
                #expect(try await server.cli("GET", "dedup:2:ns:\(key)") == value)
            }

            // Another kind of value put at a claimed key: that key answers wrongType, the others
            // around it are completed all the same.
            let claimed = try await store.claim(batch: ["first", "hashed", "last"].map { request(id("ns", $0)) }).map {
                try #require($0.lease)
            }
            try await server.cli("DEL", "dedup:2:ns:hashed")
            try await server.cli("HSET", "dedup:2:ns:hashed", "name", "x")
            await expectDedupError(.wrongType) {
                _ = try await store.complete(batch: claimed.map { Completion(lease: $0, retention: .seconds(60)) })
            }
            #expect(try await store.record(for: id("ns", "first"))?.state == .completed)
            #expect(try await store.record(for: id("ns", "last"))?.state == .completed)
            #expect(try await server.cli("HGET", "dedup:2:ns:hashed", "name") == "x")
            await store.close()
        }
    }

    @Test(
        "where the cluster is hidden (CLUSTER SLOTS refused, as by a proxy) a batch completion refused across hash slots (CROSSSLOT) goes again one key per call, and so do the store's later ones; a store that sees the cluster is never refused"
    )
    func crossSlotCompletion() async throws {
        try await withRedisServer(arguments: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]) {
            server in
            try await server.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            let deadline = ContinuousClock.now + .seconds(10)
            while try await !server.cli("CLUSTER", "INFO").contains("cluster_state:ok") {
                try #require(ContinuousClock.now < deadline, "the one-node cluster did not come up")
                try await Task.sleep(for: .milliseconds(20))
            }
            // A user that may not read the slot map: the store takes the node for a single server.
            try await server.cli("ACL", "SETUSER", "hidden", "on", ">pw", "~*", "&*", "+@all", "-cluster|slots")
            let store = try makeRedisStore("redis://hidden:pw@127.0.0.1:\(server.port!)")
            for round in 0..<2 {
                let ids = (0..<10).map { id("ns", "r\(round)-\($0)") }
                let leases = try await store.claim(batch: ids.map { request($0) }).map { try #require($0.lease) }
                try await server.cli("CONFIG", "RESETSTAT")
                let answers = try await store.complete(
                    batch: leases.map { Completion(lease: $0, retention: .seconds(60)) }
                )
                #expect(answers == Array(repeating: .completed, count: 10))
                let stats = try await server.cli("INFO", "commandstats")
                let calls = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_evalsha:") }
                // The first batch tries one call, refused before it runs, then one per key; the second
                // goes one per key straight away.
                #expect(calls?.hasPrefix("cmdstat_evalsha:calls=10,") == true, "\(calls ?? "no EVALSHA")")
                #expect(calls?.contains("rejected_calls=\(round == 0 ? 1 : 0),") == true, "\(calls ?? "no EVALSHA")")
                for recordID in ids { #expect(try await store.record(for: recordID)?.state == .completed) }
            }
            #expect(!store.isCluster)
            await store.close()

            // Seeing the cluster, the store groups a batch's completions by hash slot: none refused.
            let clusterStore = try makeRedisStore(server.url)
            let ids = (0..<10).map { id("ns", "seen-\($0)") }
            let leases = try await clusterStore.claim(batch: ids.map { request($0) }).map { try #require($0.lease) }
            #expect(clusterStore.isCluster)
            try await server.cli("CONFIG", "RESETSTAT")
            #expect(
                try await clusterStore.complete(batch: leases.map { Completion(lease: $0, retention: .seconds(60)) })
                    == Array(repeating: .completed, count: 10)
            )
            let calls = try await server.cli("INFO", "commandstats").split(whereSeparator: \.isNewline).first {
                $0.hasPrefix("cmdstat_evalsha:")
            }
            #expect(calls?.contains("rejected_calls=0,") == true, "\(calls ?? "no EVALSHA")")
            await clusterStore.close()
        }
    }

    @Test("a batch with someone else's value at one key throws that error and releases what it acquired")
    func failedBatchReleases() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            try await server.cli("HSET", "dedup:2:ns:taken", "name", "x")
            let requests = [request(id("ns", "a")), request(id("ns", "taken")), request(id("ns", "b"))]
            await expectDedupError(.wrongType) { _ = try await store.claim(batch: requests) }
            #expect(try await store.record(for: id("ns", "a")) == nil, "not left in flight")
            #expect(try await store.record(for: id("ns", "b")) == nil, "not left in flight")
            #expect(try await server.cli("HGET", "dedup:2:ns:taken", "name") == "x")
            // A key the batch found in flight (its script step) fails the same way.
            let held = try #require(try await store.claim(request(id("ns", "held"))).lease)
            try await server.cli("SET", "dedup:2:ns:junk", "in_flight owner=3:abc fencing=x")
            await expectDedupError(.corruptStore) {
                _ = try await store.claim(batch: [
                    request(id("ns", "c")), request(id("ns", "held")), request(id("ns", "junk")),
                ])
            }
            #expect(try await store.record(for: id("ns", "c")) == nil, "not left in flight")
            #expect(
                try await store.record(for: id("ns", "held"))?.ownerToken == held.ownerToken,
                "someone else's lease untouched"
            )
            await store.close()
        }
    }

    @Test("the largest identities, long owner tokens, fingerprints and results fit every command, single and batched")
    func largeArguments() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let namespace = String(repeating: "é", count: 64)  // 128 bytes, the limit
            let keys = [String(repeating: "k", count: 511), String(repeating: "🎉", count: 127), "x"]  // with the round digit: 512 and 509 bytes
            let fingerprint = String(repeating: "f", count: 5_000)
            let result = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0) })
            for (round, owner) in ["o", String(repeating: "t", count: 300), Lease.makeOwnerToken()].enumerated() {
                let ids = keys.map { id(namespace, "\(round)" + $0) }
                let single = ClaimRequest(
                    id: ids[0],
                    ownerToken: owner,
                    lease: .seconds(30),
                    retention: .seconds(3600),
                    fingerprint: fingerprint
                )
                let lease = try #require(try await store.claim(single).lease)
                try await store.complete(Completion(lease: lease, retention: .seconds(3600), result: result))
                let batch = ids.dropFirst().map {
                    ClaimRequest(
                        id: $0,
                        ownerToken: owner + "-\($0.key.count)",
                        lease: .seconds(30),
                        retention: .seconds(3600),
                        fingerprint: fingerprint
                    )
                }
                let leases = try await store.claim(batch: Array(batch)).map { try #require($0.lease) }
                let answers = try await store.complete(
                    batch: leases.map { Completion(lease: $0, retention: .seconds(3600), result: result) }
                )
                #expect(answers == [.completed, .completed])
                for recordID in ids {
                    guard
                        case .duplicate(let record) = try await store.claim(request(recordID, fingerprint: fingerprint))
                    else {
                        Issue.record("expected a duplicate of \(recordID)")
                        continue
                    }
                    #expect(record.result == result && record.fingerprint == fingerprint && record.id == recordID)
                }
            }
            await store.close()
        }
    }

    @Test(
        "keys tampered with behind the store: an expiry moved later keeps the record readable; one out of range is corruptStore, not a crash; forget clears a damaged record"
    )
    func tamperedExpiries() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            // An operator's PEXPIRE (or the server's clock stepping back) moves the expiry later.
            let moved = id("ns", "moved")
            let lease = try #require(
                try await store.claim(request(moved, lease: .seconds(30), retention: .seconds(3600))).lease
            )
            let expiry = try #require(Int64(try await server.cli("PEXPIRETIME", "dedup:2:ns:moved")))
            try await server.cli("PEXPIREAT", "dedup:2:ns:moved", String(expiry + 60_000))
            let renewed = try await store.renew(lease, for: .seconds(30))
            #expect(try await store.claim(request(moved)).kind == "inFlight")
            try await store.complete(Completion(lease: renewed, retention: .seconds(3600)))
            #expect(try await store.claim(request(moved)).kind == "duplicate")

            // An expiry no dedup record has (in either layout): refused as corrupt, never a trap.
            for (key, value) in [
                ("far", "in_flight owner=1:t fencing=1 attempt=1 lease_span_ms=1 retention_ms=1 fp=-"),
                ("far-current", "in_flight - 1:t 1 1"),
            ] {
                try await server.cli("SET", "dedup:2:ns:\(key)", value)
                try await server.cli("PEXPIREAT", "dedup:2:ns:\(key)", "9223372036854775700")
                await expectDedupError(.corruptStore) { _ = try await store.claim(request(id("ns", key))) }
                await expectDedupError(.corruptStore) { _ = try await store.record(for: id("ns", key)) }
            }
            #expect(
                try await store.records(matching: RecordFilter(namespace: "ns"), after: nil, limit: 10).records.map(
                    \.id
                ) == [moved]
            )

            // forget (no filter) clears a record of ours that cannot be read; someone else's string stays.
            for key in ["far", "far-current"] {
                #expect(try await store.forget(id("ns", key)))
                #expect(try await server.cli("EXISTS", "dedup:2:ns:\(key)") == "0")
            }
            try await server.cli("SET", "dedup:2:ns:theirs", "not ours")
            #expect(try await store.forget(id("ns", "theirs")) == false)
            #expect(try await server.cli("GET", "dedup:2:ns:theirs") == "not ours")
            await store.close()
        }
    }

    @Test(
        "a retention under a millisecond completes (the record is kept 0 ms); a claim whose TIME is refused leaves nothing in flight"
    )
    func edgeArguments() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let brief = try #require(try await store.claim(request(id("ns", "brief"))).lease)
            try await store.complete(Completion(lease: brief, retention: .microseconds(500)))
            #expect(try await store.record(for: id("ns", "brief")) == nil)

            try await server.cli("ACL", "SETUSER", "notime", "on", ">pw", "~dedup:*", "+@all", "-time")
            let limited = try makeRedisStore("redis://notime:pw@127.0.0.1:\(server.port!)/0")
            await expectDedupError(.authenticationFailed) { _ = try await limited.claim(request(id("ns", "one"))) }
            await expectDedupError(.authenticationFailed) {
                _ = try await limited.claim(batch: [request(id("ns", "two")), request(id("ns", "three"))])
            }
            for key in ["one", "two", "three"] {
                #expect(try await server.cli("EXISTS", "dedup:2:ns:\(key)") == "0", "\(key) left in flight")
            }
            for store in [store, limited] { await store.close() }
        }
    }

    @Test("a completed key that outlives its record's expiry is gone for claims (single and batch) and reads")
    func completedKeyPastItsRecord() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            // Completed long ago (kept 1 s from 1970), its key still alive: what a completion leaves
            // for the millisecond its key may outlive the record. In the previous layout and the current.
            let stale =
                "completed fencing=3 attempt=2 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=1000 result=-"
            let staleCurrent = "done \(String(1000, radix: 36)) 1000 1s f3 a2"
            for (key, value) in [("single", stale), ("batch-1", stale), ("batch-2", staleCurrent)] {
                try await server.cli("SET", "dedup:2:ns:\(key)", value, "PX", "60000")
            }
            #expect(try await store.record(for: id("ns", "single")) == nil)
            let single = try #require(try await store.claim(request(id("ns", "single"))).lease)
            #expect(single.fencingToken == 1 && single.attempt == 1 && !single.isTakeover)
            let answers = try await store.claim(batch: [
                request(id("ns", "batch-1")), request(id("ns", "fresh")), request(id("ns", "batch-2")),
            ])
            let leases = answers.compactMap(\.lease)
            #expect(leases.count == 3 && leases.allSatisfy { $0.fencingToken == 1 && $0.attempt == 1 })
            for key in ["single", "batch-1", "batch-2"] {
                let record = try #require(try await store.record(for: id("ns", key)))
                #expect(record.state == .inFlight && record.fencingToken == 1)
            }
            await store.close()
        }
    }

    @Test("records, conditional delete and stats by SCAN")
    func inspection() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            for index in 0..<25 {
                let lease = try #require(try await store.claim(request(id("alpha", "k\(index)"))).lease)
                if index % 5 != 0 { try await store.complete(Completion(lease: lease, retention: .seconds(600))) }
            }
            _ = try await store.claim(request(id("beta", "k0"), lease: .milliseconds(1)))
            // Someone else's data under our prefix is skipped by listing and stats.
            try await server.cli("SET", "dedup:5:alpha:stranger", "x")
            try await Task.sleep(for: .milliseconds(5))  // beta's 1 ms lease passes on the server clock

            let stats = try await store.stats()
            #expect(stats.namespaces.map(\.namespace) == ["alpha", "beta"])
            #expect(stats.namespaces[0].completed == 20 && stats.namespaces[0].inFlight == 5)
            #expect(stats.namespaces[1].inFlight == 1 && stats.namespaces[1].expiredLeases == 1)
            #expect(stats.total == 26)

            var completed: [RecordID] = []
            var cursor: PageCursor?
            var pages = 0
            repeat {
                let page = try await store.records(
                    matching: RecordFilter(namespace: "alpha", state: .completed),
                    after: cursor,
                    limit: 7
                )
                #expect(page.records.count <= 7)
                #expect(page.records.allSatisfy { $0.state == .completed && $0.id.namespace == "alpha" })
                completed += page.records.map(\.id)
                cursor = page.next
                pages += 1
            } while cursor != nil && pages < 100
            #expect(completed.count == 20 && Set(completed).count == 20)

            // Conditional delete: only records that still match the filter go.
            let everything = (0..<25).map { id("alpha", "k\($0)") } + [id("beta", "k0")]
            let deleted = try await store.delete(
                everything,
                matching: RecordFilter(namespace: "alpha", state: .inFlight)
            )
            #expect(deleted == 5)
            let future = Date().addingTimeInterval(3600)
            #expect(try await store.delete(everything, matching: RecordFilter(from: future)) == 0)
            #expect(try await store.delete(everything, matching: RecordFilter(state: .completed, until: future)) == 20)
            #expect(try await store.forget(id("beta", "k0")))
            #expect(try await store.stats().total == 0)
            #expect(try await store.purgeExpired(limit: 100) == 0)
            await expectDedupError(.invalidConfiguration) {
                _ = try await store.records(matching: RecordFilter(), after: PageCursor(token: "bogus"), limit: 5)
            }
            await store.close()
        }
    }

    @Test("many tasks on one store and several stores on one server: each key acquired exactly once")
    func concurrentLedger() async throws {
        try await withRedisServer { server in
            let stores = try (0..<3).map { _ in try makeRedisStore(server.url) }
            let keys = (0..<200).map { id("ledger", "m\($0)") }
            let ledger = Shared<[RecordID: Int]>([:])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<12 {
                    let store = stores[worker % stores.count]
                    group.addTask {
                        for recordID in keys.shuffled() {
                            let answer = try await store.claim(request(recordID))
                            if let lease = answer.lease {
                                ledger.withLock { $0[recordID, default: 0] += 1 }
                                if worker.isMultiple(of: 2) {
                                    try await store.complete(Completion(lease: lease, retention: .seconds(60)))
                                }
                            } else {
                                #expect(answer.kind == "inFlight" || answer.kind == "duplicate")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let counts = ledger.withLock { $0 }
            #expect(counts.count == keys.count)
            #expect(counts.values.allSatisfy { $0 == 1 }, "\(counts.filter { $0.value != 1 })")
            for store in stores { await store.close() }
        }
    }

    @Test(
        "server killed mid-run: calls fail with storeUnavailable; restarted, the same store recovers",
        arguments: [true, false]
    )
    func killAndRestart(inline: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, inline: inline)
            #expect(try await store.claim(request(id("ns", "before"))).kind == "acquired")

            let errors = Shared<[DedupError.Code: Int]>([:])
            let successes = Shared(0)
            let running = Shared(true)
            let workers = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in 0..<4 {
                        group.addTask {
                            var index = 0
                            while running.withLock({ $0 }) {
                                index += 1
                                do {
                                    _ = try await store.claim(request(id("ns", "w\(worker)-\(index)")))
                                    successes.withLock { $0 += 1 }
                                } catch let error as DedupError {
                                    errors.withLock { $0[error.code, default: 0] += 1 }
                                } catch {
                                    Issue.record("not a DedupError: \(error)")
                                }
                            }
                        }
                    }
                }
            }
            while successes.withLock({ $0 }) < 200 { try await Task.sleep(for: .milliseconds(1)) }
            await server.kill()
            await expectDedupError(.storeUnavailable) { _ = try await store.claim(request(id("ns", "while-down"))) }
            await expectDedupError(.storeUnavailable) { _ = try await store.ping() }
            running.withLock { $0 = false }
            await workers.value
            let seen = errors.withLock { $0 }
            #expect(seen.keys.allSatisfy { $0 == .storeUnavailable }, "\(seen)")

            try await server.restart()
            #expect(try await store.claim(request(id("ns", "after"))).kind == "acquired")
            #expect(try await store.ping() > .zero)
            await store.close()
        }
    }

    @Test(
        "a connection the server closed while the store was idle is replaced without an error (inline and I/O-thread paths)",
        arguments: [true, false]
    )
    func serverClosedIdleConnection(inline: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, poolSize: 1, inline: inline)
            #expect(try await store.claim(request(id("ns", "before"))).kind == "acquired")
            // What an idle `timeout`, a failover or an operator does to a connection between calls.
            // The server closes the socket before it answers the kill, so the close has reached
            // the store's side by the time the next call checks the connection.
            #expect(try await server.cli("CLIENT", "KILL", "TYPE", "normal") == "1")
            #expect(try await store.claim(request(id("ns", "after"))).kind == "acquired")
            #expect(try await store.ping() > .zero)
            await store.close()
        }
    }
}
