import Dedup
import DedupTestKit
import DedupTestSupport
import Foundation
import Logging
import Testing

@testable import DedupRedis

/// Runs `body` with a fresh redis-server, stopping it afterwards whatever happens.
func withRedisServer<T>(
    _ listener: RedisServer.Listener = .loopback,
    arguments: [String] = [],
    _ body: (RedisServer) async throws -> T
) async throws -> T {
    let server = try await RedisServer.start(listener: listener, arguments: arguments)
    do {
        let value = try await body(server)
        await server.stop()
        return value
    } catch {
        await server.stop()
        throw error
    }
}

/// A store with a short reconnect policy, so failure tests do not wait long.
func makeRedisStore(
    _ url: String,
    prefix: String = "dedup",
    commandTimeout: Duration = .seconds(2),
    poolSize: Int = 2,
    inline: Bool = true,
    completesBatchesInOneScript: Bool = true
) throws -> RedisDedupStore {
    try RedisDedupStore(
        url: url,
        configuration: .init(
            connectTimeout: .seconds(1),
            commandTimeout: commandTimeout,
            poolSize: poolSize,
            keyPrefix: prefix,
            reconnect: .init(maximumAttempts: 2, initialBackoff: .milliseconds(10), maximumBackoff: .milliseconds(20)),
            runsIdleCallsInline: inline,
            completesBatchesInOneScript: completesBatchesInOneScript
        )
    )
}

/// A lone connection's settings, with the given gather window (see `RedisConnection`).
func connectionSettings(_ server: RedisServer, gatherWindow: Duration) throws -> ConnectionSettings {
    var settings = ConnectionSettings(
        endpoint: try RedisEndpoint(url: server.url),
        connectTimeout: .seconds(2),
        commandTimeout: .seconds(30),
        reconnect: .init(maximumAttempts: 2, initialBackoff: .milliseconds(10), maximumBackoff: .milliseconds(20)),
        logger: Logger(label: "test")
    )
    settings.gatherWindow = gatherWindow
    return settings
}

func id(_ namespace: String, _ key: String) -> RecordID {
    try! RecordID(namespace: namespace, key: key)
}

func request(
    _ id: RecordID,
    lease: Duration = .seconds(30),
    retention: Duration = .seconds(3600),
    fingerprint: String? = nil
) -> ClaimRequest {
    ClaimRequest(id: id, lease: lease, retention: retention, fingerprint: fingerprint)
}

extension ClaimAnswer {
    var lease: Lease? {
        if case .acquired(let lease) = self { return lease }
        return nil
    }

    var kind: String {
        switch self {
        case .acquired(let lease): return lease.isTakeover ? "takeover" : "acquired"
        case .duplicate: return "duplicate"
        case .inFlight: return "inFlight"
        case .payloadMismatch: return "payloadMismatch"
        }
    }

    var record: DedupRecord? {
        switch self {
        case .acquired: return nil
        case .duplicate(let record), .inFlight(let record), .payloadMismatch(let record): return record
        }
    }
}

/// The conformance harness for Redis: each store gets a key prefix of its own on one server, so
/// stores of different checks share nothing; the clock is the server's, so time passes by waiting.
struct RedisConformanceHarness: ConformanceHarness {
    /// The server's URL, or a cluster node's.
    let url: String

    init(server: RedisServer) {
        url = server.url
    }

    init(cluster: RedisCluster) {
        url = cluster.url
    }

    func makeStore() async throws -> any DedupStore {
        try makeRedisStore(url, prefix: "conformance-\(UUID().uuidString.prefix(12))")
    }

    func makePeer(of store: any DedupStore) async throws -> any DedupStore {
        guard let redis = store as? RedisDedupStore else { return store }
        return try makeRedisStore(url, prefix: redis.configuration.keyPrefix)
    }

    /// Long enough that a scheduling stall on a busy 2-core machine (dozens of test servers start
    /// at once) stays well inside one unit, short enough to wait out: 100 ms proved too tight.
    var timeUnit: Duration { .milliseconds(500) }

    /// Redis drops a record itself when its `PEXPIREAT` passes, so purge finds nothing to do.
    var expiresRecordsAutomatically: Bool { true }

    /// Waits: the server's clock is the behaviour under test, not a synchronisation stand-in.
    func advance(by duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}
