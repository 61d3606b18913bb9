import DedupTestSupport
import Testing

@Suite("Redis shared by several processes")
struct RedisMultiProcessTests {
    @Test("4 processes claiming the same keys on one server apply each key exactly once", arguments: [1, 25])
    func fourProcesses(batch: Int) async throws {
        let server = try await RedisServer.start()
        defer { Task { await server.stop() } }
        let keys = 400
        let outcome = try await WorkerFleet.run(
            processes: 4,
            store: server.url,
            keys: keys,
            extraArguments: ["--rounds", "2", "--batch", "\(batch)", "--handler-us", "50"]
        )
        #expect(outcome.runsPerKey.count == keys, "every key ran")
        for key in 0..<keys {
            #expect(outcome.runsPerKey[key] == 1, "key \(key) ran \(outcome.runsPerKey[key] ?? 0) times")
        }
        #expect(outcome.processesThatApplied > 1, "the processes really raced: \(outcome.summaries)")
        await server.stop()
    }
}
