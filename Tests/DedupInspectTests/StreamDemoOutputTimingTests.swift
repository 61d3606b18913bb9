import DedupTestSupport
import Foundation
import Testing

/// `dedup-demo --broker redis-stream://…` (the built binary) on a real redis-server: consumer
/// processes killed with SIGKILL and restarted, producer retries, poison messages and a replay.
/// Its verdict depends on the consumers draining the stream within the demo's time limit, hence a
/// timing suite.
@Suite("dedup-demo on a real Redis stream", .timeLimit(.minutes(3)))
struct StreamDemoOutputTimingTests {
    typealias Run = DemoOutputTests.Run

    func streamDemo(server: RedisServer, key: String, store: String) async throws -> Run {
        let run = try await runProcess(
            try BuiltExecutables.path("dedup-demo"),
            [
                "--broker", "redis-stream://127.0.0.1:\(try #require(server.port))/\(key)", "--store", store,
                "--messages", "120",
                "--poison-messages", "3", "--consumers", "3", "--kills", "2", "--time-limit", "60",
            ]
        )
        return Run(status: run.status, stdout: run.output, stderr: run.errors)
    }

    /// The rows every run must show: kills happened, three poison messages dead-lettered once each,
    /// the replay re-applied exactly the messages of its range, nothing applied other than promised.
    func expectLedger(_ run: Run, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(
            run.status == 0,
            "exit \(run.status): \(run.stderr.prefix(800))\n\(run.stdout)",
            sourceLocation: sourceLocation
        )
        #expect(run.stderr.isEmpty, "standard error: \(run.stderr.prefix(500))", sourceLocation: sourceLocation)
        let processes = try #require(
            run.value(after: "consumer processes"),
            "\(run.stdout)",
            sourceLocation: sourceLocation
        )
        // Two kills per pass at most; the first pass always has holders to kill (the poison messages wait).
        let kills = processes.split(separator: ",").last?.split(separator: " ").first.flatMap { Int($0) } ?? 0
        #expect((2...4).contains(kills), "\(processes)", sourceLocation: sourceLocation)
        let deadLetters = try #require(
            run.value(after: "dead-letter stream"),
            "\(run.stdout)",
            sourceLocation: sourceLocation
        )
        #expect(
            deadLetters.hasSuffix("3 entries in orders:dead for 3 poison messages (each exactly once)"),
            "\(deadLetters)",
            sourceLocation: sourceLocation
        )
        let replay = try #require(run.value(after: "replay "), "\(run.stdout)", sourceLocation: sourceLocation)
        // "[T1, T2): R records reset, group moved to A-B, N messages applied again of M published in the range"
        let reset = try #require(
            replay.split(separator: "): ").last?.split(separator: " ").first.flatMap { Int($0) },
            sourceLocation: sourceLocation
        )
        #expect(reset > 0, "\(replay)", sourceLocation: sourceLocation)
        #expect(
            replay.hasSuffix("\(reset) messages applied again of \(reset) published in the range"),
            "\(replay)",
            sourceLocation: sourceLocation
        )
        #expect(run.count("violations") == 0, sourceLocation: sourceLocation)
    }

    @Test("SQLite (transactional): kills, dead letters and a replay, and exactly once: yes")
    func sqlite() async throws {
        let server = try await RedisServer.start()
        defer { Task { await server.stop() } }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-stream-demo-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("dedup.sqlite").path
        let run = try await streamDemo(server: server, key: "orders", store: "sqlite:\(path)")
        try expectLedger(run)
        #expect(run.count("re-applied in the at-least-once window") == 0)
        #expect(run.lines.last == "exactly once: yes", "\(run.stdout)")

        // The printed command removes the file, the streams and the consumer logs.
        let data = try #require(run.value(after: "data: "), "\(run.stdout)")
        let logs = try #require(data.split(separator: " ").last.map(String.init))
        #expect(FileManager.default.fileExists(atPath: logs))
        let remove = try #require(run.value(after: "remove it: "), "\(run.stdout)")
        let removal = try await runProcess("/bin/sh", ["-c", remove])
        #expect(removal.status == 0, "\(remove): \(removal.errors)")
        #expect(try await server.cli("EXISTS", "orders", "orders:dead") == "0")
        #expect(!FileManager.default.fileExists(atPath: logs))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
    }

    @Test("Redis: kills, dead letters and a replay; any re-application is one a kill after the effect explains")
    func redis() async throws {
        let server = try await RedisServer.start()
        defer { Task { await server.stop() } }
        let run = try await streamDemo(server: server, key: "orders", store: server.url)
        try expectLedger(run)
        let verdict = try #require(run.lines.last)
        #expect(
            verdict == "exactly once: yes"
                || (verdict.hasPrefix("exactly once outside the at-least-once window: yes (")
                    && verdict.hasSuffix(" after a crash between effect and completion, as documented)")),
            "\(verdict)"
        )
    }

    @Test("a stream key that already exists is refused, and nothing is written to it")
    func existingKeyRefused() async throws {
        let server = try await RedisServer.start()
        defer { Task { await server.stop() } }
        try await server.cli("XADD", "orders", "*", "order", "mine")
        let run = try await streamDemo(server: server, key: "orders", store: server.url)
        #expect(run.status == 1)
        #expect(run.stderr.contains("the key orders already exists"), "\(run.stderr)")
        #expect(try await server.cli("XLEN", "orders") == "1")
    }
}
