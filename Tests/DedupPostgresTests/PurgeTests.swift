import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Logging
import ServiceLifecycle
import Testing

/// Expired records are deleted in bounded batches, by the store call and by the service.
@Suite("PostgreSQL purge")
struct PostgresPurgeTests {
    /// Completes `keys` with a retention of one millisecond and, unless a purge may delete them
    /// meanwhile, waits until the server counts them all expired.
    static func expire(_ store: PostgresDedupStore, _ keys: Range<Int>, waiting: Bool = true) async throws {
        for key in keys {
            guard
                case .acquired(let lease) = try await store.claim(
                    ClaimRequest(id: makeID("k-\(key)"), lease: .seconds(30), retention: .seconds(3600))
                )
            else { throw ConformanceStyleFailure("k-\(key) was not acquired") }
            try await store.complete(Completion(lease: lease, retention: .milliseconds(1)))
        }
        // The server's clock decides expiry: wait until it has passed the last of them.
        while waiting, try await store.expiredCounts()["orders", default: 0] < keys.count {
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    @Test("purgeExpired deletes only expired records, at most limit per call, until a call finds fewer")
    func bounded() async throws {
        let store = try await makeStore()
        try await Self.expire(store, 0..<5)
        _ = try await store.claim(ClaimRequest(id: makeID("live"), lease: .seconds(30), retention: .seconds(3600)))
        #expect(try await store.purgeExpired(limit: 2) == 2)
        #expect(try await store.purgeExpired(limit: 2) == 2)
        #expect(try await store.purgeExpired(limit: 2) == 1)
        #expect(try await store.purgeExpired(limit: 2) == 0)
        #expect(try await store.expiredCounts().isEmpty)
        #expect(try await store.record(for: makeID("live")) != nil)
    }

    @Test("the purge service purges at start and on its interval, in batches, and stops on graceful shutdown")
    func service() async throws {
        let store = try await makeStore()
        try await Self.expire(store, 0..<5)
        let (passes, continuation) = AsyncStream.makeStream(of: PostgresPurgeService.Pass.self)
        let service = PostgresPurgeService(store: store, interval: .milliseconds(5), batchSize: 2, logger: quietLogger)
        {
            continuation.yield($0)
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: quietLogger))
        let running = Task { try await group.run() }
        var iterator = passes.makeAsyncIterator()
        #expect(await iterator.next() == PostgresPurgeService.Pass(deleted: 5, error: nil))
        // The running service may delete these while they are being written: no waiting for them.
        try await Self.expire(store, 10..<13, waiting: false)
        var deletedLater = 0
        while deletedLater < 3, let pass = await iterator.next() {
            #expect(pass.error == nil)
            deletedLater += pass.deleted
        }
        #expect(deletedLater == 3)
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(try await store.stats().total == 0)
    }
}
