import Dedup
import DedupTestKit
import Foundation
import Metrics
import MetricsTestKit
import Synchronization
import Testing

/// Records every handler run, so a test can prove how often each key was applied.
final class SideEffectLedger: Sendable {
    private let entries = Mutex<[String]>([])
    func record(_ key: String) { entries.withLock { $0.append(key) } }
    var all: [String] { entries.withLock { $0 } }
    func count(_ key: String) -> Int { entries.withLock { $0.filter { $0 == key }.count } }
}

/// A one-shot signal a task can wait on: deterministic hand-offs between a handler and a test.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}

struct TestError: Error, Equatable {}

private func makeConsumer(
    _ store: any DedupStore,
    namespace: String = "orders",
    _ configure: (inout ConsumerConfiguration) -> Void = { _ in }
) throws -> IdempotentConsumer {
    var configuration = ConsumerConfiguration()
    configure(&configuration)
    return try IdempotentConsumer(store: store, namespace: namespace, configuration: configuration)
}

@Suite("IdempotentConsumer")
struct IdempotentConsumerTests {
    let clock = ManualDedupClock()

    @Test("a message is applied once and its redeliveries are skipped as duplicates")
    func appliedThenDuplicate() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        let first = try await consumer.process(key: "m-1") { _ in ledger.record("m-1") }
        #expect(first == .applied)
        for _ in 0..<3 {
            let again = try await consumer.process(key: "m-1") { _ in ledger.record("m-1") }
            guard case .duplicate(let record) = again else {
                Issue.record("expected a duplicate, got \(again)")
                return
            }
            #expect(record.state == .completed)
            #expect(record.id == (try RecordID(namespace: "orders", key: "m-1")))
        }
        #expect(ledger.count("m-1") == 1)
    }

    @Test("a failing handler releases the claim, so the redelivery runs it again")
    func handlerFailureReleases() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        await #expect(throws: TestError.self) {
            try await consumer.process(key: "m-2") { _ in
                ledger.record("attempt")
                throw TestError()
            }
        }
        #expect(try await store.record(for: RecordID(namespace: "orders", key: "m-2")) == nil)
        let outcome = try await consumer.process(key: "m-2") { _ in ledger.record("attempt") }
        #expect(outcome == .applied)
        #expect(ledger.count("attempt") == 2)
    }

    @Test("a duplicate arriving while the first copy runs is deferred, not run")
    func inFlightIsDeferred() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        let started = Gate()
        let release = Gate()
        async let first = consumer.process(key: "m-3") { _ in
            ledger.record("m-3")
            started.open()
            await release.wait()
        }
        await started.wait()
        let second = try await consumer.process(key: "m-3") { _ in ledger.record("m-3") }
        guard case .deferred(let retryAfter) = second else {
            Issue.record("expected deferred, got \(second)")
            release.open()
            _ = try await first
            return
        }
        #expect(retryAfter >= consumer.configuration.minimumRetryDelay)
        #expect(retryAfter <= consumer.configuration.lease)
        #expect(second.shouldAck == false)
        release.open()
        #expect(try await first == .applied)
        #expect(ledger.count("m-3") == 1)
    }

    @Test("the wait policy waits for the first copy to complete and reports a duplicate")
    func waitPolicyBecomesDuplicate() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store) { $0.inFlightPolicy = .wait(timeout: .seconds(30)) }
        let ledger = SideEffectLedger()
        let started = Gate()
        let release = Gate()
        async let first = consumer.process(key: "m-4") { _ in
            ledger.record("m-4")
            started.open()
            await release.wait()
        }
        await started.wait()
        async let second = consumer.process(key: "m-4") { _ in ledger.record("m-4") }
        release.open()
        #expect(try await first == .applied)
        let outcome = try await second
        guard case .duplicate = outcome else {
            Issue.record("expected a duplicate, got \(outcome)")
            return
        }
        #expect(ledger.count("m-4") == 1)
    }

    @Test("an abandoned claim is taken over once its lease passes, with a higher fencing token")
    func takeoverAfterLeasePasses() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let id = try RecordID(namespace: "orders", key: "m-5")
        let abandoned = try await store.claim(ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)))
        guard case .acquired(let crashed) = abandoned else {
            Issue.record("setup claim failed")
            return
        }
        let early = try await consumer.process(key: "m-5") { _ in Issue.record("ran during a live lease") }
        guard case .deferred = early else {
            Issue.record("expected deferred, got \(early)")
            return
        }
        clock.advance(by: .seconds(31))
        let contexts = Mutex<[DedupContext]>([])
        let outcome = try await consumer.process(key: "m-5") { context in contexts.withLock { $0.append(context) } }
        #expect(outcome == .applied)
        let context = try #require(contexts.withLock { $0.first })
        #expect(context.isTakeover)
        #expect(context.attempt == 2)
        #expect(context.fencingToken > crashed.fencingToken)
        // The crashed consumer's late completion is refused.
        await #expect(throws: DedupError.self) {
            try await store.complete(Completion(lease: crashed, retention: .seconds(60)))
        }
    }

    @Test("a lease taken over while the handler runs is lost: nothing is recorded and leaseLost is thrown")
    func leaseLostWhileRunning() async throws {
        let store = InMemoryDedupStore(clock: clock)
        var configuration = ConsumerConfiguration()
        configuration.lease = .milliseconds(300)
        configuration.renewalInterval = .milliseconds(50)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let other = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let ledger = SideEffectLedger()
        do {
            _ = try await consumer.process(key: "m-6") { context in
                ledger.record("first")
                // Another consumer takes the key over after the lease passed in the store.
                clock.advance(by: .seconds(1))
                let takeover = try await other.process(key: "m-6") { _ in ledger.record("second") }
                #expect(takeover == .applied)
                while !context.isLeaseLost { try await Task.sleep(for: .milliseconds(10)) }
                #expect(throws: DedupError.self) { try context.checkLease() }
            }
            Issue.record("expected leaseLost")
        } catch let error as DedupError {
            #expect(error.code == .leaseLost)
        }
        let record = try #require(try await store.record(for: RecordID(namespace: "orders", key: "m-6")))
        #expect(record.state == .completed)
        #expect(record.fencingToken == 2)
    }

    @Test("work inside cancellingOnLeaseLoss is cancelled as soon as the lease is lost")
    func cancellationScope() async throws {
        let store = InMemoryDedupStore(clock: clock)
        var configuration = ConsumerConfiguration()
        configuration.lease = .milliseconds(300)
        configuration.renewalInterval = .milliseconds(50)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let id = try RecordID(namespace: "orders", key: "m-10")
        let started = ContinuousClock.now
        do {
            _ = try await consumer.process(key: "m-10") { context in
                clock.advance(by: .seconds(1))
                guard
                    case .acquired = try await store.claim(
                        ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(60))
                    )
                else {
                    Issue.record("takeover failed")
                    return
                }
                // A minute-long call: only cancellation can end it early.
                try await context.cancellingOnLeaseLoss { try await Task.sleep(for: .seconds(60)) }
                Issue.record("the operation was not cancelled")
            }
            Issue.record("expected leaseLost")
        } catch let error as DedupError {
            #expect(error.code == .leaseLost)
        }
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test("fail-closed: a store that is down throws storeUnavailable and the handler does not run")
    func failClosed() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.storeUnavailable, "connection refused"))
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        do {
            _ = try await consumer.process(key: "m-7") { _ in ledger.record("m-7") }
            Issue.record("expected storeUnavailable")
        } catch let error as DedupError {
            #expect(error.code == .storeUnavailable)
        }
        #expect(ledger.all.isEmpty)
    }

    @Test("fail-open: a store that is down lets the handler run without dedup, and says so")
    func failOpen() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.timeout, "no answer"))
        let consumer = try makeConsumer(store) { $0.storeFailurePolicy = .failOpen }
        let ledger = SideEffectLedger()
        let outcome = try await consumer.process(key: "m-8") { context in
            #expect(context.lease == nil)
            ledger.record("m-8")
        }
        #expect(outcome == .bypassed(.storeUnavailable))
        #expect(ledger.count("m-8") == 1)
    }

    @Test("fail-open never covers misconfiguration: a wrong password still throws")
    func failOpenDoesNotCoverAuthentication() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        store.fail(.claim, with: DedupError(.authenticationFailed, "WRONGPASS"))
        let consumer = try makeConsumer(store) { $0.storeFailurePolicy = .failOpen }
        await #expect(throws: DedupError(.authenticationFailed, "WRONGPASS")) {
            try await consumer.process(key: "m-9") { _ in Issue.record("handler ran") }
        }
    }

    @Test("a missing key is rejected by default and bypassed when allowed")
    func missingKey() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let rejecting = try makeConsumer(store)
        do {
            _ = try await rejecting.process(key: nil) { _ in Issue.record("handler ran") }
            Issue.record("expected missingKey")
        } catch let error as DedupError {
            #expect(error.code == .missingKey)
        }
        do {
            _ = try await rejecting.process(key: "") { _ in Issue.record("handler ran") }
            Issue.record("expected missingKey")
        } catch let error as DedupError {
            #expect(error.code == .missingKey)
        }
        let bypassing = try makeConsumer(store) { $0.missingKeyPolicy = .bypass }
        let ledger = SideEffectLedger()
        #expect(try await bypassing.process(key: nil) { _ in ledger.record("ran") } == .bypassed(.missingKey))
        #expect(ledger.count("ran") == 1)
        #expect(store.calls(.claim) == 0)
    }

    @Test("an invalid key is refused before the store is touched")
    func invalidKeyNeverReachesTheStore() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let consumer = try makeConsumer(store) { $0.identityLimits = try! IdentityLimits(maximumKeyBytes: 16) }
        for key in [String(repeating: "k", count: 17), String(repeating: "é", count: 9)] {
            do {
                _ = try await consumer.process(key: key) { _ in Issue.record("handler ran") }
                Issue.record("expected invalidKey for \(key)")
            } catch let error as DedupError {
                #expect(error.code == .invalidKey)
            }
        }
        let unbounded = try makeConsumer(store)
        await #expect(throws: DedupError.self) {
            try await unbounded.process(key: String(repeating: "x", count: 513)) { _ in }
        }
        #expect(store.calls(.claim) == 0)
        #expect(throws: DedupError.self) { try IdentityLimits(maximumKeyBytes: 513) }
    }

    @Test("an invalid namespace or configuration is refused when the consumer is made")
    func invalidConsumer() async throws {
        let store = InMemoryDedupStore(clock: clock)
        #expect(throws: DedupError.self) { try IdempotentConsumer(store: store, namespace: "") }
        #expect(throws: DedupError.self) {
            try IdempotentConsumer(store: store, namespace: String(repeating: "n", count: 129))
        }
        #expect(throws: DedupError.self) { try makeConsumer(store) { $0.renewalInterval = .seconds(30) } }
        #expect(throws: DedupError.self) { try makeConsumer(store) { $0.lease = .zero } }
    }

    @Test("the same key with a different payload fingerprint is a typed error")
    func payloadMismatch() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        #expect(try await consumer.process(key: "p-1", fingerprint: "sha:aaa") { _ in } == .applied)
        do {
            _ = try await consumer.process(key: "p-1", fingerprint: "sha:bbb") { _ in Issue.record("handler ran") }
            Issue.record("expected payloadMismatch")
        } catch let error as DedupError {
            #expect(error.code == .payloadMismatch)
        }
        guard case .duplicate = try await consumer.process(key: "p-1", fingerprint: "sha:aaa", { _ in }) else {
            Issue.record("same fingerprint should be a duplicate")
            return
        }
    }

    @Test("a handler's result is stored and handed to later duplicates")
    func storedResult() async throws {
        struct Receipt: Codable, Equatable, Sendable {
            var charge: String
            var cents: Int
        }
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let first = try await consumer.process(key: "r-1") { _ in Receipt(charge: "ch_1", cents: 1299) }
        #expect(first.outcome == .applied)
        #expect(first.value == Receipt(charge: "ch_1", cents: 1299))
        let second = try await consumer.process(key: "r-1", returning: Receipt.self) { _ in
            Issue.record("handler ran")
            return Receipt(charge: "ch_2", cents: 0)
        }
        guard case .duplicate = second.outcome else {
            Issue.record("expected duplicate")
            return
        }
        #expect(second.value == Receipt(charge: "ch_1", cents: 1299))
    }

    @Test("a result over the size cap is not stored, and the message is still applied")
    func oversizedResult() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store) { $0.maximumResultBytes = 8 }
        let first = try await consumer.process(key: "r-2") { _ in String(repeating: "x", count: 100) }
        #expect(first.outcome == .applied)
        let record = try #require(try await store.record(for: RecordID(namespace: "orders", key: "r-2")))
        #expect(record.result == nil)
    }

    @Test("a completion that fails for a store error is retried, then thrown with the record left in flight")
    func completionRetry() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let consumer = try makeConsumer(store) {
            $0.completionAttempts = 3
            $0.completionBackoff = .milliseconds(1)
        }
        store.fail(.complete, with: DedupError(.storeUnavailable, "reset"), times: 2)
        #expect(try await consumer.process(key: "c-1") { _ in } == .applied)
        #expect(store.calls(.complete) == 3)

        store.fail(.complete, with: DedupError(.storeUnavailable, "down"))
        do {
            _ = try await consumer.process(key: "c-2") { _ in }
            Issue.record("expected the completion error")
        } catch let error as DedupError {
            #expect(error.code == .storeUnavailable)
        }
        let record = try #require(try await store.base.record(for: RecordID(namespace: "orders", key: "c-2")))
        #expect(record.state == .inFlight)
    }

    @Test("the local cache answers repeated duplicates without a store call")
    func localCache() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let metrics = TestMetrics()
        var configuration = ConsumerConfiguration()
        configuration.localCache = LocalCacheConfiguration(capacity: 2, timeToLive: .seconds(60))
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            metricsFactory: metrics
        )
        #expect(try await consumer.process(key: "a") { _ in } == .applied)
        let claims = store.calls(.claim)
        guard case .duplicate = try await consumer.process(key: "a", { _ in }) else {
            Issue.record("expected duplicate")
            return
        }
        #expect(store.calls(.claim) == claims)
        #expect(try metrics.expectCounter("dedup.cache.hits", [("namespace", "orders")]).totalValue == 1)
        // Capacity 2: "a" is evicted by "b" and "c", so the store is asked again.
        _ = try await consumer.process(key: "b") { _ in }
        _ = try await consumer.process(key: "c") { _ in }
        _ = try await consumer.process(key: "a") { _ in }
        #expect(store.calls(.claim) == claims + 3)
    }

    @Test("claims are counted by outcome under dedup. labels")
    func metricsByOutcome() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let metrics = TestMetrics()
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", metricsFactory: metrics)
        _ = try await consumer.process(key: "x") { _ in }
        _ = try await consumer.process(key: "x") { _ in }
        _ = try? await consumer.process(key: "y") { _ in throw TestError() }
        #expect(
            try metrics.expectCounter("dedup.claims", [("namespace", "orders"), ("outcome", "acquired")]).totalValue
                == 2
        )
        #expect(
            try metrics.expectCounter("dedup.claims", [("namespace", "orders"), ("outcome", "duplicate")]).totalValue
                == 1
        )
        #expect(try metrics.expectCounter("dedup.handler.failures", [("namespace", "orders")]).totalValue == 1)
        #expect(
            try metrics.expectTimer("dedup.store.duration", [("namespace", "orders"), ("operation", "claim")]).values
                .count == 3
        )
    }

    @Test(
        "a batch is claimed in one store call and gives each message its own outcome (a key's second copy: a duplicate)"
    )
    func batch() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        _ = try await consumer.process(key: "b-0") { _ in ledger.record("b-0") }
        let messages = ["b-0", "b-1", "b-2", "b-1", "fail", ""]
        let claimsBefore = store.calls(.claim)
        let results = try await consumer.processBatch(messages, keyStrategy: .messageID { $0 }) { message, _ in
            if message == "fail" { throw TestError() }
            ledger.record(message)
        }
        #expect(store.calls(.claim) == claimsBefore + 1)
        #expect(store.calls(.complete) == 2)  // one single completion earlier, one batch now
        guard case .success(.duplicate) = results[0] else {
            Issue.record("\(results[0])")
            return
        }
        #expect(try results[1].get() == .applied)
        #expect(try results[2].get() == .applied)
        guard case .success(.duplicate) = results[3] else {
            Issue.record("\(results[3])")
            return
        }
        #expect(throws: TestError.self) { try results[4].get() }
        #expect(throws: DedupError.self) { try results[5].get() }
        #expect(ledger.count("b-0") == 1)
        #expect(ledger.count("b-1") == 1)
        #expect(try await store.base.record(for: RecordID(namespace: "orders", key: "fail")) == nil)
    }

    @Test("a result that cannot be encoded is not stored, and the message stays applied")
    func unencodableResult() async throws {
        struct Reading: Codable, Sendable { var value: Double }
        let store = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(store)
        let ledger = SideEffectLedger()
        for _ in 0..<2 {
            _ = try await consumer.process(key: "nan", returning: Reading.self) { _ in
                ledger.record("nan")
                return Reading(value: .nan)  // JSON has no NaN: encoding throws
            }
        }
        #expect(ledger.count("nan") == 1)
        #expect(try await store.record(for: RecordID(namespace: "orders", key: "nan"))?.state == .completed)
    }

    @Test("a completion whose reply was lost is recognised as applied on retry")
    func completionReplyLost() async throws {
        let base = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(ReplyLosingStore(base)) { $0.completionBackoff = .milliseconds(1) }
        #expect(try await consumer.process(key: "lost-reply") { _ in } == .applied)
    }

    @Test("a batch stops renewing its leases once their completion is written, before waiting on keys held elsewhere")
    func batchLeasesSettledBeforeWaiting() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: clock))
        let metrics = TestMetrics()
        var configuration = ConsumerConfiguration()
        configuration.lease = .seconds(2)
        configuration.renewalInterval = .milliseconds(40)
        configuration.inFlightPolicy = .wait(timeout: .milliseconds(400))
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            metricsFactory: metrics
        )
        // Held elsewhere for the whole wait (the store's clock does not move).
        _ = try await store.claim(
            ClaimRequest(id: RecordID(namespace: "orders", key: "held"), lease: .seconds(60), retention: .seconds(60))
        )
        let results = try await consumer.processBatch(["done", "failed", "held"], keyStrategy: .messageID { $0 }) {
            key,
            _ in
            if key == "failed" { throw TestError() }
        }
        #expect(try results[0].get() == .applied)
        #expect(throws: TestError.self) { try results[1].get() }
        guard case .deferred = try results[2].get() else {
            Issue.record("expected the held key deferred, got \(results[2])")
            return
        }
        // Ten renewal intervals passed while waiting: a completed or released lease renewed then
        // would have been refused and counted as lost.
        #expect(metrics.counters(label: "dedup.lease.losses").allSatisfy { $0.totalValue == 0 })
    }

    @Test("a batch completion whose reply was lost is recognised as applied on retry, message by message")
    func batchCompletionReplyLost() async throws {
        let base = InMemoryDedupStore(clock: clock)
        let consumer = try makeConsumer(ReplyLosingStore(base)) { $0.completionBackoff = .milliseconds(1) }
        let ledger = SideEffectLedger()
        let results = try await consumer.processBatch(["b-1", "b-2", "b-3"], keyStrategy: .messageID { $0 }) { key, _ in
            ledger.record(key)
        }
        for result in results { #expect(try result.get() == .applied) }
        #expect(ledger.count("b-1") == 1 && ledger.count("b-2") == 1 && ledger.count("b-3") == 1)
    }

    @Test("many concurrent consumers on the same keys apply each key exactly once")
    func concurrentConsumers() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let ledger = SideEffectLedger()
        let keys = (0..<300).map { "k-\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                let consumer = try makeConsumer(store)
                group.addTask {
                    var pending = worker.isMultiple(of: 2) ? keys : keys.reversed()
                    while !pending.isEmpty {
                        var retry: [String] = []
                        for key in pending {
                            let outcome = try await consumer.process(key: key) { _ in
                                ledger.record(key)
                                await Task.yield()
                            }
                            if case .deferred = outcome { retry.append(key) }
                        }
                        pending = retry
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        for key in keys { #expect(ledger.count(key) == 1, "\(key)") }
        #expect(ledger.all.count == keys.count)
    }
}

/// Completes in the store, then reports a lost connection: once for single completions; once for
/// batches, after carrying out only the first completion of the batch (the rest never reached it).
final class ReplyLosingStore<Base: DedupStore>: ForwardingStore {
    let base: Base
    let lost = Mutex(false)
    init(_ base: Base) { self.base = base }
    func complete(_ completion: Completion) async throws {
        try await base.complete(completion)
        if lost.withLock({ value in
            defer { value = true }
            return !value
        }) {
            throw DedupError(.timeout, "reply lost")
        }
    }
    let lostBatch = Mutex(false)
    func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        if lostBatch.withLock({ value in
            defer { value = true }
            return !value
        }) {
            _ = try await base.complete(batch: Array(completions.prefix(1)))
            throw DedupError(.timeout, "reply lost")
        }
        return try await base.complete(batch: completions)
    }
}
