import Dedup
import DedupTestSupport
import Foundation
import Logging
import Testing

@testable import DedupRedis

@Suite("Redis connection: concurrent callers share round trips")
struct ConnectionGatheringTests {
    private func connection(_ server: RedisServer, gatherWindow: Duration) throws -> RedisConnection {
        RedisConnection(settings: try connectionSettings(server, gatherWindow: gatherWindow), index: 0)
    }

    /// Holds the connection's I/O thread in a round trip of its own (a `BLPOP` waiting for the
    /// list `gate`), so that callers queue behind it; returns the waiting call.
    private func holdRoundTrip(of connection: RedisConnection) async throws -> Task<[RedisReply], any Error> {
        let gate = Task { try await connection.execute([RedisCommand("BLPOP", "gate", "30")]) }
        while connection.roundTrips.load(ordering: .relaxed) < 1 { await Task.yield() }
        return gate
    }

    /// Ends the held round trip once `units` units are queued behind it.
    private func release(
        _ gate: Task<[RedisReply], any Error>,
        _ server: RedisServer,
        once units: Int,
        unitsAreQueuedOn connection: RedisConnection
    ) async throws {
        while connection.queuedUnits < units { await Task.yield() }
        _ = try await server.cli("RPUSH", "gate", "open")
        _ = try await gate.value
    }

    @Test("a pool sends a call to a connection already in use rather than to an idle one")
    func poolFillsTheFirstConnection() async throws {
        try await withRedisServer { server in
            let pool = ConnectionPool(settings: try connectionSettings(server, gatherWindow: .zero), size: 2)
            let first = pool.pick()
            let gate = try await holdRoundTrip(of: first)
            #expect(pool.pick() === first)
            try await release(gate, server, once: 0, unitsAreQueuedOn: first)
            await pool.close()
        }
    }

    @Test("the callers one round trip resumed send their next commands in one round trip")
    func resumedCallersShareTheNextRoundTrip() async throws {
        try await withRedisServer { server in
            // A window far longer than any scheduling delay: the test depends on who arrives, not when.
            let connection = try connection(server, gatherWindow: .seconds(20))
            let gate = try await holdRoundTrip(of: connection)
            let callers = 4
            let replies = try await withThrowingTaskGroup(of: [RedisReply].self) { group in
                for caller in 0..<callers {
                    group.addTask {
                        let first = try await connection.execute([RedisCommand("INCR", "first-\(caller)")])
                        let second = try await connection.execute([RedisCommand("INCR", "second-\(caller)")])
                        return first + second
                    }
                }
                try await release(gate, server, once: callers, unitsAreQueuedOn: connection)
                var all: [[RedisReply]] = []
                for try await replies in group { all.append(replies) }
                return all
            }
            #expect(replies.count == callers)
            for pair in replies { #expect(pair == [.integer(1), .integer(1)]) }
            // The BLPOP; the four first commands, queued together; the four second commands, which
            // the I/O thread waited for because the round trip before resumed four callers.
            #expect(connection.roundTrips.load(ordering: .relaxed) == 3)
            #expect(connection.unitsSent.load(ordering: .relaxed) == 1 + 2 * callers)
            await connection.close()
        }
    }

    @Test("a resumed caller that does not come back does not hold up the one that does")
    func gatheringEndsAtTheWindow() async throws {
        try await withRedisServer { server in
            let connection = try connection(server, gatherWindow: .milliseconds(1))
            let gate = try await holdRoundTrip(of: connection)
            let lone = Task { try await connection.execute([RedisCommand("PING")]) }
            let other = Task { try await connection.execute([RedisCommand("PING")]) }
            try await release(gate, server, once: 2, unitsAreQueuedOn: connection)
            _ = try await (lone.value, other.value)
            // Two callers were resumed together; only one comes back, and it is answered.
            #expect(try await connection.execute([RedisCommand("PING")]) == [.status("PONG")])
            #expect(connection.roundTrips.load(ordering: .relaxed) == 3)
            await connection.close()
        }
    }
}
