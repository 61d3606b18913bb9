import DedupTestSupport
import Foundation
import Testing

/// `dedup-demo --broker redis-stream://… --store postgres://…` (the built binary): the stream demo's
/// consumer processes keep their dedup records in PostgreSQL. The worker is not transactional here
/// (its effects go to its ledger file, as on Redis). Its verdict depends on the consumers draining
/// the stream within the demo's time limit, hence a timing suite.
@Suite("dedup-demo on a Redis stream with a PostgreSQL store", .timeLimit(.minutes(3)))
struct PostgresStreamDemoTimingTests {
    @Test("kills, dead letters and a replay; exactly once outside the window a kill explains; no password printed")
    func streamOnPostgres() async throws {
        let redis = try await RedisServer.start()
        defer { Task { await redis.stop() } }
        let postgres = try await TestDatabase.shared.server()
        let run = try await runProcess(
            try BuiltExecutables.path("dedup-demo"),
            [
                "--broker", "redis-stream://127.0.0.1:\(try #require(redis.port))/orders", "--store",
                postgres.url + "?schema=\(freshSchema("stream"))", "--messages", "120", "--poison-messages", "3",
                "--consumers", "3", "--kills", "2", "--time-limit", "60",
            ]
        )
        #expect(run.status == 0, "exit \(run.status): \(run.errors.prefix(800))\n\(run.output)")
        let lines = run.output.split(separator: "\n")
        let deadLetters = lines.first { $0.hasPrefix("dead-letter stream") }
        #expect(
            deadLetters?.hasSuffix("3 entries in orders:dead for 3 poison messages (each exactly once)") == true,
            "\(run.output)"
        )
        let verdict = try #require(lines.last.map(String.init), "\(run.output)")
        #expect(
            verdict == "exactly once: yes"
                || (verdict.hasPrefix("exactly once outside the at-least-once window: yes (")
                    && verdict.hasSuffix(" after a crash between effect and completion, as documented)")),
            "\(verdict)"
        )
        #expect(!(run.output + run.errors).contains(postgres.password))
        // One command removes the records, the streams and the logs; the note on the password ends it
        // (a shell comment in its middle would cut off the rest).
        let remove = try #require(lines.first { $0.hasPrefix("remove it: ") }, "\(run.output)")
        let command = remove.split(separator: "#", maxSplits: 1)
        #expect(command.first?.contains("psql ") == true && command.first?.contains("redis-cli ") == true, "\(remove)")
        #expect(command.last?.hasSuffix("with the password in PGPASSWORD") == true, "\(remove)")
    }
}
