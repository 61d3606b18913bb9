import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

/// A `DedupError` from the Redis store keeps the server's error reply as the server wrote it, and
/// the operating system's error behind a connection that failed.
@Suite("Redis errors keep their cause")
struct RedisErrorCauseTests {
    @Test("another kind of value at a record's key is wrongType with the server's WRONGTYPE reply")
    func wrongType() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            try await server.cli("HSET", "dedup:2:ns:taken", "name", "x")
            for error in [
                await expectDedupError(.wrongType) { _ = try await store.claim(request(id("ns", "taken"))) },
                await expectDedupError(.wrongType) { _ = try await store.record(for: id("ns", "taken")) },
            ] {
                #expect(
                    error?.redisErrorText?.hasPrefix("WRONGTYPE ") == true,
                    "\(String(describing: error?.redisErrorText))"
                )
                #expect(error?.sqliteExtendedResultCode == nil)
            }
            await store.close()
        }
    }

    @Test("a server that wants a password is authenticationFailed with its NOAUTH reply; a wrong one with WRONGPASS")
    func authentication() async throws {
        try await withRedisServer(arguments: ["--requirepass", "s3cret"]) { server in
            let none = try makeRedisStore(server.url)
            let missing = await expectDedupError(.authenticationFailed) {
                _ = try await none.claim(request(id("ns", "k")))
            }
            #expect(
                missing?.redisErrorText?.hasPrefix("NOAUTH ") == true,
                "\(String(describing: missing?.redisErrorText))"
            )
            let wrong = try makeRedisStore(server.url.replacingOccurrences(of: "redis://", with: "redis://:wrong@"))
            let refused = await expectDedupError(.authenticationFailed) { _ = try await wrong.ping() }
            #expect(
                refused?.redisErrorText?.hasPrefix("WRONGPASS ") == true,
                "\(String(describing: refused?.redisErrorText))"
            )
            for store in [none, wrong] { await store.close() }
        }
    }

    @Test("a database the server does not have is invalidConfiguration with the server's reply to SELECT")
    func missingDatabase() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore("redis://127.0.0.1:\(try #require(server.port))/99")
            let error = await expectDedupError(.invalidConfiguration) { _ = try await store.ping() }
            #expect(error?.redisErrorText?.hasPrefix("ERR ") == true, "\(String(describing: error?.redisErrorText))")
            await store.close()
        }
    }

    @Test("a refused connection is storeUnavailable with the operating system's ECONNREFUSED")
    func connectionRefused() async throws {
        // A port that was free a moment ago and has no listener: the server is stopped.
        let server = try await RedisServer.start()
        let url = server.url
        await server.stop()
        let store = try makeRedisStore(url)
        let error = await expectDedupError(.storeUnavailable) { _ = try await store.ping() }
        #expect(
            (error?.underlyingError as? POSIXError)?.code == .ECONNREFUSED,
            "\(String(describing: error?.underlyingError))"
        )
        #expect(error?.redisErrorText == nil)
        await store.close()
    }
}
