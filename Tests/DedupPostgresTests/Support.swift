import Dedup
import DedupPostgres
import DedupTestKit
import DedupTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The test process's PostgreSQL server and two running clients on it (a store and its peer use
/// different pools). Tests keep apart by working in schemas of their own.
actor TestDatabase {
    static let shared = TestDatabase()

    private var started: (server: PostgresServer, clients: [PostgresClient])?

    func server() async throws -> PostgresServer { try await start().server }

    /// Client 0 or 1, running for the rest of the process.
    func client(_ index: Int = 0) async throws -> PostgresClient { try await start().clients[index] }

    private func start() async throws -> (server: PostgresServer, clients: [PostgresClient]) {
        if let started { return started }
        let server = try await PostgresServer.shared()
        let clients = (0..<2).map { _ in PostgresClient(configuration: clientConfiguration(server)) }
        for client in clients { Task { await client.run() } }
        started = (server, clients)
        return (server, clients)
    }
}

/// The client configuration of `server`, logging in with `password`.
func clientConfiguration(_ server: PostgresServer, password: String? = nil) -> PostgresClient.Configuration {
    var configuration = PostgresClient.Configuration(
        host: "127.0.0.1",
        port: server.port,
        username: server.user,
        password: password ?? server.password,
        database: "postgres",
        tls: .disable
    )
    configuration.options.connectTimeout = .seconds(2)
    return configuration
}

/// A schema name no other test uses.
func freshSchema(_ purpose: String = "t") -> String {
    "\(purpose)_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
}

extension PostgresDedupStore.Configuration {
    /// The tests' configuration: a call timeout well above the default 10 s. The whole suite starts
    /// at once on 2 cores, and a store's first call (its migrations, queued behind other tests'
    /// work in the shared pools) can take longer than 10 s there; no test here is about the timeout
    /// but the ones that set their own.
    static var forTests: Self { .init(timeout: .seconds(60)) }

    /// ``forTests`` with another lock timeout or retry count: a test about those still migrates
    /// under the tests' call timeout, not the 10 s default.
    static func forTests(lockTimeout: Duration? = nil, transactionRetries: Int? = nil) -> Self {
        var configuration = forTests
        if let lockTimeout { configuration.lockTimeout = lockTimeout }
        if let transactionRetries { configuration.transactionRetries = transactionRetries }
        return configuration
    }
}

/// A store in a fresh schema on the shared server.
func makeStore(
    schema: String = freshSchema(),
    client index: Int = 0,
    configuration: PostgresDedupStore.Configuration = .forTests
)
    async throws -> PostgresDedupStore
{
    var configuration = configuration
    configuration.schema = schema
    return try await PostgresDedupStore(
        client: try await TestDatabase.shared.client(index),
        configuration: configuration,
        logger: quietLogger
    )
}

let quietLogger = Logger(label: "dedup-postgres-tests", factory: { _ in SwiftLogNoOpLogHandler() })

func makeID(_ key: String, namespace: String = "orders") -> RecordID {
    try! RecordID(namespace: namespace, key: key)
}

/// PostgreSQL stores in schemas of their own on the test process's server, on the server's real
/// clock; a peer is a second store object on another client (other connections), same schema.
struct PostgresConformanceHarness: ConformanceHarness {
    func makeStore() async throws -> any DedupStore {
        try await DedupPostgresTests.makeStore(schema: freshSchema("conformance"))
    }

    func makePeer(of store: any DedupStore) async throws -> any DedupStore {
        let store = try #require(store as? PostgresDedupStore)
        return try await DedupPostgresTests.makeStore(schema: store.configuration.schema, client: 1)
    }

    /// As for Redis: long enough that a scheduling stall on a busy 2-core machine stays inside one unit.
    var timeUnit: Duration { .milliseconds(500) }
    var pagesInRecordIDOrder: Bool { true }

    /// Waits: the server's clock is the behaviour under test, not a synchronisation stand-in.
    func advance(by duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}
