import Dedup
import DedupTestKit
import Foundation
import Testing

/// Brokers hand out a message and its redelivery in one read: a key's later copies in a batch are
/// answered by its first copy's outcome, never deferred as if someone else held them.
@Suite("processBatch with a key twice in one batch")
struct BatchDuplicateTests {
    let clock = ManualDedupClock()

    private func consumer(
        _ store: any DedupStore,
        _ configure: (inout ConsumerConfiguration) -> Void = { _ in }
    ) throws -> IdempotentConsumer {
        var configuration = ConsumerConfiguration()
        configure(&configuration)
        return try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
    }

    @Test("a later copy of an applied key is a duplicate of the first, and the handler runs once")
    func laterCopiesAreDuplicates() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let consumer = try consumer(store)
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(
            ["a", "b", "a", "a"],
            keyStrategy: .messageID { $0 },
            brokerTime: { _ in Date(millisecondsSince1970: 1_700_000_000_123) }
        ) { key, _ in ledger.record(key) }
        #expect(ledger.all == ["a", "b"])
        #expect(try results[0].get() == .applied)
        #expect(try results[1].get() == .applied)
        for index in [2, 3] {
            guard case .success(.duplicate(let record)) = results[index] else {
                Issue.record("copy \(index): expected a duplicate, got \(results[index])")
                continue
            }
            #expect(record.id == RecordID(uncheckedNamespace: "orders", key: "a"))
            #expect(record.state == .completed)
            #expect(record.fencingToken == 1)
        }
        #expect(store.calls(.claim) == 1)
        #expect(try await store.base.record(for: RecordID(uncheckedNamespace: "orders", key: "a"))?.state == .completed)
    }

    @Test("a later copy of a key already completed before the batch is a duplicate too")
    func laterCopiesOfAnEarlierCompletion() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try consumer(store)
        _ = try await consumer.process(key: "done") { _ in }
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(["done", "done"], keyStrategy: .messageID { $0 }) { key, _ in
            ledger.record(key)
        }
        #expect(ledger.all.isEmpty)
        for result in results {
            guard case .success(.duplicate) = result else {
                Issue.record("expected a duplicate, got \(result)")
                continue
            }
        }
    }

    @Test("when the first copy's handler fails, the later copies are not acked either, and run on their redelivery")
    func failedFirstCopy() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try consumer(store)
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(["f", "f"], keyStrategy: .messageID { $0 }) { key, _ in
            ledger.record(key)
            throw TestError()
        }
        #expect(ledger.all == ["f"])
        #expect(throws: TestError.self) { try results[0].get() }
        #expect(throws: TestError.self) { try results[1].get() }
        #expect(try await store.record(for: RecordID(uncheckedNamespace: "orders", key: "f")) == nil)
    }

    @Test("a later copy with another payload fingerprint is a payload mismatch, as its redelivery would be")
    func laterCopyWithAnotherPayload() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try consumer(store)
        let messages = [(key: "p", digest: "sha-1"), (key: "p", digest: "sha-1"), (key: "p", digest: "sha-2")]
        let results = try await consumer.processBatch(
            messages,
            keyStrategy: .messageID { $0.key },
            fingerprint: { $0.digest }
        ) { _, _ in }
        #expect(try results[0].get() == .applied)
        guard case .success(.duplicate) = results[1] else {
            Issue.record("\(results[1])")
            return
        }
        #expect {
            try results[2].get()
        } throws: { error in
            (error as? DedupError)?.code == .payloadMismatch
        }
    }

    @Test(
        "with the store down under fail-open, a key's first copy runs without dedup and its later copies are deferred"
    )
    func laterCopiesUnderFailOpen() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.timeout, "no answer"))
        let consumer = try consumer(store) { $0.storeFailurePolicy = .failOpen }
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(["a", "b", "a"], keyStrategy: .messageID { $0 }) { key, _ in
            ledger.record(key)
        }
        #expect(ledger.all == ["a", "b"])
        #expect(try results[0].get() == .bypassed(.storeUnavailable))
        #expect(try results[1].get() == .bypassed(.storeUnavailable))
        guard case .success(.deferred) = results[2] else {
            Issue.record("expected deferred, got \(results[2])")
            return
        }
    }

    @Test("when the first copy is deferred (held elsewhere), the later copies are deferred with it")
    func deferredFirstCopy() async throws {
        let store = InMemoryDedupStore(clock: clock)
        _ = try await store.claim(
            ClaimRequest(
                id: RecordID(uncheckedNamespace: "orders", key: "held"),
                lease: .seconds(60),
                retention: .seconds(60)
            )
        )
        let consumer = try consumer(store)
        let results = try await consumer.processBatch(["held", "held"], keyStrategy: .messageID { $0 }) { _, _ in
            Issue.record("a key held elsewhere ran")
        }
        for result in results {
            guard case .success(.deferred) = result else {
                Issue.record("expected deferred, got \(result)")
                continue
            }
        }
    }
}
