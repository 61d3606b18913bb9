import Dedup
import DedupSQLite
import DedupTestKit
import Synchronization
import Testing

/// SQLite stores in files of one temporary directory, on one manual clock; a peer is a second
/// store object (its own connections) on the same file.
struct SQLiteHarness: ConformanceHarness {
    let clock = ManualDedupClock()
    let directory = TemporaryDirectory()
    private let counter = Counter()

    func makeStore() async throws -> any DedupStore {
        try SQLiteDedupStore(path: directory.file("store-\(counter.next()).sqlite"), configuration: .init(clock: clock))
    }

    func makePeer(of store: any DedupStore) async throws -> any DedupStore {
        let store = try #require(store as? SQLiteDedupStore)
        return try SQLiteDedupStore(path: store.path, configuration: .init(clock: clock))
    }

    var timeUnit: Duration { .seconds(1) }
    func advance(by duration: Duration) async throws { clock.advance(by: duration) }
    var hasManualClock: Bool { true }
    var pagesInRecordIDOrder: Bool { true }
}

final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int {
        value.withLock {
            $0 += 1
            return $0
        }
    }
}

@Suite("SQLiteDedupStore conformance")
struct SQLiteConformanceTests {
    @Test(arguments: DedupConformance.checks)
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(SQLiteHarness())
    }
}
