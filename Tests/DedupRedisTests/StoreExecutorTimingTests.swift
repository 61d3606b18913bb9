import Dedup
import DedupTestSupport
import Foundation
import Logging
import Testing

@testable import DedupRedis

/// The connection's thread as a task executor, judged on a real clock: runs with the other
/// `TimingTests` suites, in a test process of its own (`scripts/test`).
@Suite("Redis store's task executor while the server is down")
struct StoreExecutorTimingTests {
    @Test("tasks preferring the connection run while it waits to reconnect, and close ends the wait")
    func tasksRunDuringReconnectBackoff() async throws {
        // Nothing listens on port 1: each attempt is refused at once, and the thread then waits
        // out the backoff before the next one.
        let connection = RedisConnection(
            settings: ConnectionSettings(
                endpoint: try RedisEndpoint(url: "redis://127.0.0.1:1"),
                connectTimeout: .seconds(1),
                commandTimeout: .seconds(1),
                reconnect: .init(maximumAttempts: 2, initialBackoff: .seconds(5), maximumBackoff: .seconds(5)),
                logger: Logger(label: "test")
            ),
            index: 0
        )
        let call = Task { try await connection.execute([RedisCommand("PING")]) }
        // The first attempt was refused: the thread now waits out the backoff.
        while connection.connectAttempts.load(ordering: .relaxed) == 0 { await Task.yield() }
        let clock = ContinuousClock()
        let start = clock.now
        let ranOnThread = await withTaskExecutorPreference(connection) { connection.isIOThread }
        #expect(ranOnThread)
        #expect(clock.now - start < .seconds(1), "a task waited \(clock.now - start) for the backoff")
        let closing = clock.now
        await connection.close()
        #expect(clock.now - closing < .seconds(1), "close waited \(clock.now - closing) for the backoff")
        let outcome = await call.result
        #expect(throws: DedupError.self) { try outcome.get() }
    }
}
