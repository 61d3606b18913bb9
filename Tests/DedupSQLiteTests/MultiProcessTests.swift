import DedupTestSupport
import Testing

@Suite("SQLite shared by several processes")
struct SQLiteMultiProcessTests {
    @Test("4 processes hammering the same keys in one file apply each key exactly once", arguments: [1, 25])
    func fourProcesses(batch: Int) async throws {
        let directory = TemporaryDirectory()
        let keys = 400
        let outcome = try await WorkerFleet.run(
            processes: 4,
            store: "sqlite:\(directory.file())",
            keys: keys,
            extraArguments: ["--rounds", "2", "--batch", "\(batch)", "--handler-us", "50"]
        )
        #expect(outcome.runsPerKey.count == keys, "every key ran")
        for key in 0..<keys {
            #expect(outcome.runsPerKey[key] == 1, "key \(key) ran \(outcome.runsPerKey[key] ?? 0) times")
        }
        #expect(outcome.processesThatApplied > 1, "the processes really raced: \(outcome.summaries)")
    }
}
