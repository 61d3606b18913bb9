import Dedup
import DedupTestKit
import Foundation
import Synchronization
import Testing

/// A third party's store as small as the protocol allows: it implements only the single-key calls
/// (here by handing them to an in-memory store) and takes every batch call from `DedupStore`'s
/// defaults. ``failing(_:)`` makes the calls on one key throw, to see what a batch does then.
final class SingleCallStore: SingleCallForwardingStore {
    let base: InMemoryDedupStore<ManualDedupClock>
    private let failingKey = Mutex<String?>(nil)
    private let calls = Mutex<[String]>([])

    init(base: InMemoryDedupStore<ManualDedupClock>) {
        self.base = base
    }

    /// Makes every later claim and completion of `key` throw ``failure``.
    func failing(_ key: String?) { failingKey.withLock { $0 = key } }

    /// The error a failing key's calls throw.
    static let failure = DedupError(.storeError, "the store failed on this key")

    /// The single calls made, in order: `claim <key>`, `complete <key>`, `release <key>`.
    var callLog: [String] { calls.withLock { $0 } }

    private func enter(_ call: String, _ id: RecordID) throws {
        calls.withLock { $0.append("\(call) \(id.key)") }
        if failingKey.withLock({ $0 }) == id.key, call != "release" { throw Self.failure }
    }

    func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try enter("claim", request.id)
        return try await base.claim(request)
    }

    func complete(_ completion: Completion) async throws {
        try enter("complete", completion.lease.id)
        try await base.complete(completion)
    }

    func release(_ lease: Lease) async throws {
        try enter("release", lease.id)
        try await base.release(lease)
    }
}

@Suite("A store with only the single-key calls")
struct SingleCallStoreConformanceTests {
    @Test(arguments: DedupConformance.checks)
    func conforms(_ check: ConformanceCheck) async throws {
        try await check.run(InMemoryHarness { SingleCallStore(base: $0) })
    }

    func request(_ key: String) throws -> ClaimRequest {
        ClaimRequest(id: try RecordID(namespace: "orders", key: key), lease: .seconds(30), retention: .seconds(3600))
    }

    @Test("a batch claim that fails on a key releases the keys it acquired before it, and throws the key's error")
    func failedBatchClaim() async throws {
        let store = SingleCallStore(base: InMemoryDedupStore(clock: ManualDedupClock()))
        store.failing("b")
        let requests = try ["a", "b", "c"].map(request)
        await #expect(throws: SingleCallStore.failure) { try await store.claim(batch: requests) }
        #expect(store.callLog == ["claim a", "claim b", "release a"])
        #expect(try await store.record(for: requests[0].id) == nil)
        #expect(try await store.record(for: requests[2].id) == nil)
    }

    @Test(
        "a batch completion that fails on a lease throws its error; those before it are written, those after it not tried"
    )
    func failedBatchCompletion() async throws {
        let store = SingleCallStore(base: InMemoryDedupStore(clock: ManualDedupClock()))
        let answers = try await store.claim(batch: try ["a", "b", "c"].map(request))
        let completions = answers.map { answer -> Completion in
            guard case .acquired(let lease) = answer else {
                preconditionFailure("expected an acquired key, got \(answer)")
            }
            return Completion(lease: lease, retention: .seconds(3600))
        }
        store.failing("b")
        await #expect(throws: SingleCallStore.failure) { try await store.complete(batch: completions) }
        #expect(store.callLog.suffix(2) == ["complete a", "complete b"])
        #expect(try await store.record(for: completions[0].lease.id)?.state == .completed)
        #expect(try await store.record(for: completions[2].lease.id)?.state == .inFlight)
    }

    @Test("a lease no longer current is leaseLost in a batch completion, and the rest are completed")
    func leaseLostInBatchCompletion() async throws {
        let store = SingleCallStore(base: InMemoryDedupStore(clock: ManualDedupClock()))
        let answers = try await store.claim(batch: try ["a", "b"].map(request))
        let leases = answers.compactMap { answer -> Lease? in
            if case .acquired(let lease) = answer { return lease }
            return nil
        }
        try await store.release(leases[0])
        let completed = try await store.complete(batch: leases.map { Completion(lease: $0, retention: .seconds(3600)) })
        #expect(completed == [.leaseLost, .completed])
    }
}
