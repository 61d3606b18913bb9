import Dedup
import DedupTestSupport
import Foundation
import Testing

/// `dedup-demo` (the built binary) on PostgreSQL: transactional mode, so crashes after the effect
/// roll back with it and every message is applied exactly once.
@Suite("dedup-demo on PostgreSQL")
struct PostgresDemoTests {
    @Test("crashes after the effect roll back, exactly once holds, and the password is printed nowhere")
    func exactlyOnce() async throws {
        let server = try await TestDatabase.shared.server()
        let url = server.url + "?schema=\(freshSchema("demo"))"
        let run = try await runProcess(
            try BuiltExecutables.path("dedup-demo"),
            ["--messages", "300", "--crash-rate", "0.2", "--consumers", "4", "--store", url]
        )
        #expect(run.status == 0, "\(run.errors)")
        let lines = run.output.split(separator: "\n").map(String.init)
        #expect(lines.last == "exactly once: yes", "\(run.output)")
        #expect(!(run.output + run.errors).contains(server.password))
    }
}
