import Dedup
import DedupRedis
import DedupRedisStreams
import DedupTestSupport
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Logs nowhere: the consumers' warnings (a failing handler is the point of some tests) stay out
/// of the test output. With `DEDUP_TEST_LOG` set, logs everything to standard error.
let quietLogger: Logger = {
    guard ProcessInfo.processInfo.environment["DEDUP_TEST_LOG"] != nil else {
        return Logger(label: "dedup.stream.tests", factory: { _ in SwiftLogNoOpLogHandler() })
    }
    var logger = Logger(label: "dedup.stream.tests", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .trace
    return logger
}()

/// A redis-server for one test, with a dedup store on it and helpers to drive a stream.
struct StreamBed {
    let server: RedisServer
    let stream = "orders"
    let group = "billing"

    /// Runs `body` with a fresh server, stopped afterwards whatever happens.
    static func with<T>(arguments: [String] = [], _ body: (StreamBed) async throws -> T) async throws -> T {
        let server = try await RedisServer.start(arguments: arguments)
        do {
            let value = try await body(StreamBed(server: server))
            await server.stop()
            return value
        } catch {
            await server.stop()
            throw error
        }
    }

    func makeStore() throws -> RedisDedupStore {
        try RedisDedupStore(
            url: server.url,
            configuration: .init(
                connectTimeout: .seconds(1),
                reconnect: .init(
                    maximumAttempts: 2,
                    initialBackoff: .milliseconds(10),
                    maximumBackoff: .milliseconds(20)
                )
            ),
            logger: quietLogger
        )
    }

    /// A dedup consumer on `store` (a new Redis store on this server when `nil`).
    func makeDedup(
        store: (any DedupStore)? = nil,
        namespace: String? = nil,
        lease: Duration = .seconds(5),
        renewal: Duration? = .seconds(1)
    ) throws -> IdempotentConsumer {
        var configuration = ConsumerConfiguration()
        configuration.lease = lease
        configuration.renewalInterval = renewal
        return try IdempotentConsumer(
            store: store ?? makeStore(),
            namespace: namespace ?? group,
            configuration: configuration,
            logger: quietLogger
        )
    }

    /// A configuration for this bed's stream and group, with short waits.
    func configuration(
        consumer name: String = "c1",
        _ change: (inout RedisStreamConsumer.Configuration) -> Void = { _ in }
    ) -> RedisStreamConsumer.Configuration {
        var configuration = RedisStreamConsumer.Configuration(stream: stream, group: group)
        configuration.consumerName = name
        configuration.blockTimeout = .milliseconds(100)
        configuration.reclaimInterval = .milliseconds(100)
        configuration.lagInterval = .zero
        configuration.connectTimeout = .seconds(1)
        configuration.reconnect = .init(
            maximumAttempts: 1,
            initialBackoff: .milliseconds(10),
            maximumBackoff: .milliseconds(20)
        )
        configuration.retryBackoff = .milliseconds(20)
        configuration.maximumRetryBackoff = .milliseconds(200)
        change(&configuration)
        return configuration
    }

    /// The dimensions of the `dedup.stream.entries` counter for `event`.
    func dimensions(_ event: String) -> [(String, String)] {
        [("stream", stream), ("group", group), ("event", event)]
    }

    /// Adds an entry; returns its ID.
    @discardableResult
    func add(_ fields: [String: String], id: String = "*") async throws -> String {
        var arguments = ["XADD", stream, id]
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) { arguments += [name, value] }
        return try await server.cli(arguments: arguments)
    }

    /// Makes a pending entry look idle for long, keeping its delivery count (`XCLAIM … IDLE …
    /// JUSTID`), so the next reclaim scan takes it over and delivers it again: a redelivery when
    /// the test says so, with ``RedisStreamConsumer/Configuration/reclaimIdleTime`` set long.
    func makeIdle(_ id: String, consumer: String = "c1") async throws {
        _ = try await server.cli(arguments: ["XCLAIM", stream, group, consumer, "0", id, "IDLE", "100000000", "JUSTID"])
    }

    /// The IDs pending in the group, with their consumers.
    func pending() async throws -> [(id: String, consumer: String)] {
        let output = try await server.cli(arguments: ["XPENDING", stream, group, "-", "+", "1000"])
        let lines = output.split(separator: "\n").map(String.init)
        return stride(from: 0, to: lines.count - 3, by: 4).map { (lines[$0], lines[$0 + 1]) }
    }
}

/// Which entries handlers ran for, how often.
final class Ledger: Sendable {
    private let runs = Mutex<[String: Int]>([:])

    func record(_ key: String) { runs.withLock { $0[key, default: 0] += 1 } }
    func count(_ key: String) -> Int { runs.withLock { $0[key] ?? 0 } }
    var all: [String: Int] { runs.withLock { $0 } }
    var total: Int { runs.withLock { $0.values.reduce(0, +) } }
}

/// Settlements seen by `onSettled`, in order.
final class Settlements: Sendable {
    private let list = Mutex<[RedisStreamConsumer.Settlement]>([])

    func append(_ settlement: RedisStreamConsumer.Settlement) { list.withLock { $0.append(settlement) } }
    var all: [RedisStreamConsumer.Settlement] { list.withLock { $0 } }
    func actions(of id: String) -> [RedisStreamConsumer.Settlement.Action] {
        all.filter { $0.entryID.description == id }.map(\.action)
    }
}

/// A gate handlers wait at until the test opens it.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let openNow = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if openNow { continuation.resume() }
        }
    }

    func open() {
        for waiter in state.withLock({ state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }) { waiter.resume() }
    }
}

/// Polls `condition` until it holds; fails the test after `timeout`.
func waitUntil(
    _ what: String,
    timeout: Duration = .seconds(15),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting until \(what)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Runs services in a group while `body` runs, then shuts them down gracefully and waits for them.
func whileRunning<T>(_ services: [any Service], _ body: (ServiceGroup) async throws -> T) async throws -> T {
    let group = ServiceGroup(services: services, logger: quietLogger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let value = try await body(group)
            await group.triggerGracefulShutdown()
            try await tasks.next()
            return value
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.next()
            throw error
        }
    }
}
