import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// Connecting to servers set up in different ways: passwords, ACL users, replicas, a full
/// server, unix sockets.
@Suite("RedisDedupStore against servers set up in different ways")
struct RedisServerSetupTests {
    @Test("requirepass: the right password works, a wrong or missing one is authenticationFailed")
    func password() async throws {
        try await withRedisServer(arguments: ["--requirepass", "s3cret"]) { server in
            let url = server.url.replacingOccurrences(of: "redis://", with: "redis://:s3cret@")
            let good = try makeRedisStore(url)
            #expect(try await good.claim(request(id("ns", "k"))).kind == "acquired")
            let wrong = try makeRedisStore(server.url.replacingOccurrences(of: "redis://", with: "redis://:wrong@"))
            let error = await expectDedupError(.authenticationFailed) {
                _ = try await wrong.claim(request(id("ns", "k")))
            }
            #expect(error.map { !$0.message.contains("wrong") } ?? true, "the password must not be in the message")
            let none = try makeRedisStore(server.url)
            await expectDedupError(.authenticationFailed) { _ = try await none.ping() }
            for store in [good, wrong, none] { await store.close() }
        }
    }

    @Test("an ACL user with the rights it needs works; without them, authenticationFailed")
    func aclUser() async throws {
        try await withRedisServer { server in
            try await server.cli("ACL", "SETUSER", "dedup", "on", ">pw", "~dedup:*", "+@all")
            try await server.cli("ACL", "SETUSER", "reader", "on", ">pw", "~dedup:*", "+ping", "+hgetall", "+time")
            let port = server.port!
            let user = try makeRedisStore("redis://dedup:pw@127.0.0.1:\(port)/0")
            #expect(try await user.claim(request(id("ns", "k"))).kind == "acquired")
            let wrong = try makeRedisStore("redis://dedup:nope@127.0.0.1:\(port)/0")
            await expectDedupError(.authenticationFailed) { _ = try await wrong.ping() }
            let reader = try makeRedisStore("redis://reader:pw@127.0.0.1:\(port)/0")
            await expectDedupError(.authenticationFailed) { _ = try await reader.claim(request(id("ns", "k2"))) }
            for store in [user, wrong, reader] { await store.close() }
        }
    }

    @Test(
        "another kind of value at a record's key is wrongType; a string that is no record is corruptStore; neither is changed"
    )
    func wrongType() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            try await server.cli("HSET", "dedup:2:ns:taken", "name", "x")
            await expectDedupError(.wrongType) { _ = try await store.claim(request(id("ns", "taken"))) }
            await expectDedupError(.wrongType) { _ = try await store.record(for: id("ns", "taken")) }
            #expect(try await server.cli("HGET", "dedup:2:ns:taken", "name") == "x")
            for (key, value) in [
                ("plain", "someone else's"),
                ("flight", "in_flight owner=3:abc fencing=x"),
                ("done", "completed fencing=1 attempt=1"),
                ("flight-current", "in_flight 3:abc"),
                ("flight-unended", "in_flight - 3:abc 30s 1d p9:short"),
                ("done-current", "done mwtesoc2 x 1d"),
                ("done-unended", "done mwtesoc2 5 1d r9:short"),
            ] {
                try await server.cli("SET", "dedup:2:ns:\(key)", value)
                await expectDedupError(.corruptStore) { _ = try await store.claim(request(id("ns", key))) }
                await expectDedupError(.corruptStore) { _ = try await store.claim(batch: [request(id("ns", key))]) }
                await expectDedupError(.corruptStore) { _ = try await store.record(for: id("ns", key)) }
                #expect(try await server.cli("GET", "dedup:2:ns:\(key)") == value)
            }
            // Listing and stats step over them.
            #expect(try await store.records(matching: RecordFilter(), after: nil, limit: 10).records.isEmpty)
            #expect(try await store.stats().namespaces.isEmpty)
            await store.close()
        }
    }

    @Test("a read-only replica gives readOnly; maxmemory reached gives outOfMemory")
    func readOnlyAndOutOfMemory() async throws {
        try await withRedisServer { primary in
            try await withRedisServer { replica in
                try await replica.cli("REPLICAOF", "127.0.0.1", String(primary.port!))
                let store = try makeRedisStore(replica.url)
                await expectDedupError(.readOnly) { _ = try await store.claim(request(id("ns", "k"))) }
                try await replica.cli("REPLICAOF", "NO", "ONE")
                try await replica.cli("CONFIG", "SET", "maxmemory", "1")
                await expectDedupError(.outOfMemory) { _ = try await store.claim(request(id("ns", "k"))) }
                try await replica.cli("CONFIG", "SET", "maxmemory", "0")
                #expect(try await store.claim(request(id("ns", "k"))).kind == "acquired")
                await store.close()
            }
        }
    }

    @Test("unix socket URL with ?db=N uses that database")
    func unixSocket() async throws {
        try await withRedisServer(.unixSocket) { server in
            let store = try makeRedisStore(server.url + "?db=3")
            #expect(try await store.claim(request(id("ns", "k"))).kind == "acquired")
            #expect(try await server.cli("-n", "3", "EXISTS", "dedup:2:ns:k") == "1")
            #expect(try await server.cli("-n", "0", "EXISTS", "dedup:2:ns:k") == "0")
            await store.close()
        }
    }

    @Test(
        "after SCRIPT FLUSH the scripts are loaded again and the calls succeed (inline and I/O-thread paths)",
        arguments: [true, false]
    )
    func noScriptRecovery(inline: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, poolSize: 1, inline: inline)
            let lease = try #require(try await store.claim(request(id("ns", "a"))).lease)
            try await server.cli("SCRIPT", "FLUSH")
            try await store.complete(Completion(lease: lease, retention: .seconds(60)))
            try await server.cli("SCRIPT", "FLUSH")
            let answers = try await store.claim(batch: [
                request(id("ns", "a")), request(id("ns", "b")), request(id("ns", "b")),
            ])
            #expect(answers.map(\.kind) == ["duplicate", "acquired", "inFlight"])
            await store.close()
        }
    }
}
