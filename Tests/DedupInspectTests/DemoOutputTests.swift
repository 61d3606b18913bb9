import DedupTestSupport
import Foundation
import Testing

/// `dedup-demo` (the built binary) on a real redis-server and a real SQLite file, with crashes on
/// both sides of the effect: its verdict says exactly what held, every double application is one of
/// its planned crashes after the effect, no library log line shows at the default verbosity, and it
/// says where its data is with a command that removes exactly that.
@Suite("dedup-demo tells the truth quietly")
struct DemoOutputTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String

        var lines: [Substring] { stdout.split(separator: "\n") }

        /// The first number on the summary row starting with `label`.
        func count(_ label: String) -> Int? {
            guard let line = lines.first(where: { $0.hasPrefix(label) }) else { return nil }
            return line.dropFirst(label.count).split(whereSeparator: { !$0.isNumber }).first.flatMap { Int($0) }
        }

        /// The text after `prefix` on the first line starting with it.
        func value(after prefix: String) -> String? {
            lines.first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        }
    }

    func demo(_ arguments: [String]) async throws -> Run {
        let run = try await runProcess(try BuiltExecutables.path("dedup-demo"), arguments)
        return Run(status: run.status, stdout: run.output, stderr: run.errors)
    }

    /// Runs a printed shell command, as a user would paste it.
    func shell(_ command: String) async throws -> ProcessResult {
        try await runProcess("/bin/sh", ["-c", command])
    }

    func expectQuiet(_ run: Run, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!run.stdout.contains("took over an expired lease"), sourceLocation: sourceLocation)
        #expect(!run.stderr.contains("took over an expired lease"), sourceLocation: sourceLocation)
        // No library log line at all by default: standard error stays empty on success.
        #expect(run.stderr.isEmpty, "standard error: \(run.stderr.prefix(500))", sourceLocation: sourceLocation)
    }

    @Test("Redis: crashes after the effect stay after it, each re-application is counted and explained")
    func redisCountsTheAtLeastOnceWindow() async throws {
        let server = try await RedisServer.start()
        defer { Task { await server.stop() } }
        let run = try await demo([
            "--messages", "300", "--crash-rate", "0.2", "--consumers", "4", "--store", server.url,
        ])
        #expect(run.status == 0, "exit \(run.status): \(run.stderr.prefix(500))")
        expectQuiet(run)

        let crashesAfterEffect = try #require(run.count("crashes after the effect"), "\(run.stdout)")
        let extraApplications = try #require(run.count("re-applied in the at-least-once window"), "\(run.stdout)")
        #expect(crashesAfterEffect > 0)
        #expect(extraApplications == crashesAfterEffect, "every crash after the effect re-applies its message once")
        #expect(run.count("violations") == 0)
        let verdict = try #require(run.lines.last)
        #expect(verdict.hasPrefix("exactly once outside the at-least-once window: yes ("), "\(verdict)")
        #expect(verdict.hasSuffix(" after a crash between effect and completion, as documented)"), "\(verdict)")
        #expect(!run.stdout.contains("exactly once: yes"))
        #expect(!run.stdout.contains("moved before the effect"))

        // Where the data is, and a command that removes exactly it.
        let data = try #require(run.value(after: "data: "), "\(run.stdout)")
        #expect(data.hasPrefix(server.url))
        let pattern = try #require(data.split(separator: " ").last.map(String.init))
        #expect(pattern.hasPrefix("dedup:") && pattern.hasSuffix(":*"))
        try await server.cli("SET", "unrelated", "kept")
        let keysBefore = try await server.cli("--scan", "--pattern", pattern)
        #expect(keysBefore.split(separator: "\n").count == 300)
        let remove = try #require(run.value(after: "remove it: "), "\(run.stdout)")
        let removal = try await shell(remove)
        #expect(removal.status == 0, "\(remove): \(removal.errors)")
        #expect(try await server.cli("--scan", "--pattern", pattern).isEmpty)
        #expect(try await server.cli("GET", "unrelated") == "kept")
    }

    @Test("SQLite (transactional): crashes after the effect roll back, exactly once holds, the file is named")
    func sqliteIsExactlyOnce() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dedup-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("demo file.sqlite").path
        let run = try await demo(["--messages", "300", "--crash-rate", "0.2", "--store", "sqlite:\(path)"])
        #expect(run.status == 0, "exit \(run.status): \(run.stderr.prefix(500))")
        expectQuiet(run)

        #expect(try #require(run.count("crashes after the effect"), "\(run.stdout)") > 0)
        #expect(run.count("re-applied in the at-least-once window") == 0)
        #expect(run.count("violations") == 0)
        #expect(run.lines.last == "exactly once: yes")

        let data = try #require(run.value(after: "data: "), "\(run.stdout)")
        #expect(data.hasPrefix("sqlite:\(path)"))
        #expect(FileManager.default.fileExists(atPath: path))
        let remove = try #require(run.value(after: "remove it: "), "\(run.stdout)")
        let removal = try await shell(remove)
        #expect(removal.status == 0, "\(remove): \(removal.errors)")
        let left = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(left.isEmpty, "left behind: \(left)")
    }
}
