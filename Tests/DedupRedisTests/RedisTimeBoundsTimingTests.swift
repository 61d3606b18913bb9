import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// Calls bounded on a real clock: they run with the other `TimingTests` suites, in a test process
/// of their own (`scripts/test`).
@Suite("Redis store calls bounded in time")
struct RedisTimeBoundsTimingTests {
    @Test(
        "a server that stops answering gives timeout, then the store recovers (inline and I/O-thread paths)",
        arguments: [true, false]
    )
    func commandTimeout(inline: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url, commandTimeout: .milliseconds(200), poolSize: 1, inline: inline)
            _ = try await store.ping()
            server.suspend()
            let clock = ContinuousClock()
            let start = clock.now
            await expectDedupError(.timeout) { _ = try await store.claim(request(id("ns", "frozen"))) }
            #expect(clock.now - start < .seconds(2))
            server.resume()
            #expect(try await store.claim(request(id("ns", "thawed"))).kind == "acquired")
            await store.close()
        }
    }

    @Test("ping measures a round trip; close ends the connections and later calls fail")
    func pingAndClose() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let latency = try await store.ping()
            #expect(latency > .zero && latency < .seconds(1))
            let clients = try await server.cli("CLIENT", "LIST")
            #expect(clients.split(separator: "\n").count >= 2)  // redis-cli itself and the store
            await store.close()
            await expectDedupError(.storeUnavailable) { _ = try await store.ping() }
            let unreachable = try makeRedisStore("redis://127.0.0.1:1")
            await expectDedupError(.storeUnavailable) { _ = try await unreachable.ping() }
            await unreachable.close()
        }
    }
}

/// A value shared between concurrent test tasks.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<Result>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}
