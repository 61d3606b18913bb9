import Dedup
import DedupTestKit
import Foundation
import MetricsTestKit
import Synchronization
import Testing

/// Leases under a slow store: renewals of many handlers must not queue behind each other, and a
/// handler must learn of a lost lease the moment its end passes, whatever the renewals are doing.
/// (A `TimingTests` suite: `scripts/test` runs it after the rest, in a test process of its own.)
@Suite("Lease safety under a slow store")
struct LeaseSafetyTimingTests {
    @Test("1,000 handlers of one consumer keep their leases on a store whose every call takes 50 ms")
    func manyHandlersOnASlowStore() async throws {
        let base = InMemoryDedupStore(clock: SystemDedupClock())
        let slow = FaultInjectingDedupStore(base)
        slow.delay(by: .milliseconds(50))
        let metrics = TestMetrics()
        var configuration = ConsumerConfiguration()
        // Seconds of slack, so a stall of the test process under the whole suite's load does not
        // pass for a lost lease; one renewal call per lease would take 50 s a round.
        configuration.lease = .seconds(8)
        configuration.renewalInterval = .seconds(2)
        let consumer = try IdempotentConsumer(
            store: slow,
            namespace: "orders",
            configuration: configuration,
            metricsFactory: metrics
        )
        let keys = (0..<1000).map { "m-\($0)" }
        let ids = try keys.map { try RecordID(namespace: "orders", key: $0) }
        let ledger = SideEffectLedger()
        let started = Gate()
        let running = SharedCounter()

        // A rival consumer of the same store keeps trying to take the keys while the handlers run:
        // it may only ever find them in flight (or completed, at the end).
        let stop = SharedFlag()
        let rival = Task {
            await started.wait()
            var rivalAcquired = 0
            while !stop.isSet {
                let answers = try await base.claim(
                    batch: ids.map { ClaimRequest(id: $0, lease: .seconds(8), retention: .seconds(60)) }
                )
                for answer in answers { if case .acquired = answer { rivalAcquired += 1 } }
                try await Task.sleep(for: .milliseconds(250))
            }
            return rivalAcquired
        }

        let outcomes = try await withThrowingTaskGroup(of: ProcessOutcome.self) { group in
            for key in keys {
                group.addTask {
                    try await consumer.process(key: key) { context in
                        ledger.record(key)
                        if running.increment() == keys.count { started.open() }
                        // The handler's work outlasts the lease.
                        try await Task.sleep(for: .seconds(10))
                        try context.checkLease()
                    }
                }
            }
            var outcomes: [ProcessOutcome] = []
            for try await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        stop.set()
        let rivalAcquired = try await rival.value

        #expect(outcomes.count == keys.count)
        #expect(outcomes.allSatisfy { $0 == .applied })
        #expect(rivalAcquired == 0, "the rival took over keys whose handlers were still running")
        #expect(ledger.all.count == keys.count)
        #expect(try metrics.expectCounter("dedup.lease.losses", [("namespace", "orders")]).totalValue == 0)
        #expect(
            try metrics.expectCounter("dedup.lease.renewals", [("namespace", "orders")]).totalValue >= Int64(keys.count)
        )
        // One batch call a round, not one call per lease.
        #expect(slow.calls(.renew) < 50, "renew calls: \(slow.calls(.renew))")
    }

    @Test(
        "checkLease throws from the moment the lease's end passes, while renewals fail or hang",
        arguments: [RenewalFault.failing, .hanging]
    )
    func checkLeaseAtTheDeadline(_ fault: RenewalFault) async throws {
        let base = InMemoryDedupStore(clock: SystemDedupClock())
        let store = FaultInjectingDedupStore(base)
        switch fault {
        case .failing: store.fail(.renew, with: DedupError(.storeUnavailable, "renewals are down"))
        case .hanging: store.delay([.renew], by: .seconds(4))
        }
        var configuration = ConsumerConfiguration()
        configuration.lease = .milliseconds(1000)
        configuration.renewalInterval = .milliseconds(700)
        let first = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        var waiting = configuration
        waiting.inFlightPolicy = .wait(timeout: .seconds(10))
        // The new holder claims straight from the store, without the faults.
        let second = try IdempotentConsumer(store: base, namespace: "orders", configuration: waiting)
        let newHolderRunning = SharedFlag()
        let violations = SharedCounter()
        let firstStarted = Gate()

        let takeover = Task {
            await firstStarted.wait()
            return try await second.process(key: "slow") { _ in
                newHolderRunning.set()
            }
        }
        do {
            _ = try await first.process(key: "slow") { context in
                firstStarted.open()
                while true {
                    // Read the new holder's flag first: if it was already running, the lease had
                    // passed in the store, so the check that follows must throw.
                    let newHolderWasRunning = newHolderRunning.isSet
                    do {
                        try context.checkLease()
                    } catch {
                        #expect(context.isLeaseLost)
                        break
                    }
                    if newHolderWasRunning { _ = violations.increment() }
                    try await Task.sleep(for: .milliseconds(2))
                }
            }
            Issue.record("expected leaseLost")
        } catch let error as DedupError {
            #expect(error.code == .leaseLost)
        }
        #expect(try await takeover.value == .applied)
        #expect(violations.value == 0, "checkLease passed while the new holder ran")
    }

    enum RenewalFault: CustomStringConvertible, Sendable {
        case failing, hanging
        var description: String { self == .failing ? "renewals failing" : "renewals hanging" }
    }

    @Test("work inside cancellingOnLeaseLoss is cancelled when the lease's end passes while a renewal hangs")
    func cancellationAtTheDeadline() async throws {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: SystemDedupClock()))
        store.delay([.renew], by: .seconds(30))
        var configuration = ConsumerConfiguration()
        configuration.lease = .milliseconds(600)
        configuration.renewalInterval = .milliseconds(200)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let started = ContinuousClock.now
        do {
            _ = try await consumer.process(key: "m-1") { context in
                try await context.cancellingOnLeaseLoss { try await Task.sleep(for: .seconds(60)) }
                Issue.record("the operation was not cancelled")
            }
            Issue.record("expected leaseLost")
        } catch let error as DedupError {
            #expect(error.code == .leaseLost)
        }
        // Not the 30 s the renewal hangs, nor the 60 s of the operation.
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("the default batch renewal renews every lease at once, not one after another")
    func defaultBatchRenewalIsConcurrent() async throws {
        let base = InMemoryDedupStore(clock: SystemDedupClock())
        let leases = try await (0..<20).asyncMap { index -> Lease in
            let answer = try await base.claim(
                ClaimRequest(
                    id: RecordID(namespace: "orders", key: "k\(index)"),
                    lease: .seconds(30),
                    retention: .seconds(60)
                )
            )
            guard case .acquired(let lease) = answer else { throw TestError() }
            return lease
        }
        // Every renewal waits until all of them have arrived: renewals made one after another
        // would wait forever (the barrier gives up after 10 s and fails the renewal instead).
        let store = BarrierRenewingStore(base: base, expected: leases.count)
        let answers = try await store.renew(batch: leases, for: .seconds(30))
        #expect(answers.count == leases.count)
        for (answer, lease) in zip(answers, leases) {
            guard case .renewed(let renewed) = answer else {
                Issue.record("not renewed: \(answer)")
                continue
            }
            #expect(renewed.id == lease.id)
        }
        let stale = leases[0]
        try await base.release(stale)
        let again = try await BarrierRenewingStore(base: base, expected: 2).renew(
            batch: [stale, leases[1]],
            for: .seconds(30)
        )
        #expect(again.first == .leaseLost)
    }
}

/// A count shared between tasks.
final class SharedCounter: Sendable {
    private let count = Atomic<Int>(0)
    /// Adds one; returns the new count.
    func increment() -> Int { count.add(1, ordering: .relaxed).newValue }
    var value: Int { count.load(ordering: .relaxed) }
}

/// A flag shared between tasks.
final class SharedFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// A store that implements only the single renewal, each waiting until `expected` renewals are
/// under way at once: ``DedupStore/renew(batch:for:)`` comes from the protocol's default.
final class BarrierRenewingStore: ForwardingStore {
    let base: InMemoryDedupStore<SystemDedupClock>
    let expected: Int
    private let arrived = Atomic<Int>(0)
    private let barrier = Gate()

    init(base: InMemoryDedupStore<SystemDedupClock>, expected: Int) {
        self.base = base
        self.expected = expected
    }

    func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        if arrived.add(1, ordering: .relaxed).newValue == expected { barrier.open() }
        let opened = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.barrier.wait()
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        guard opened else { throw DedupError(.timeout, "renewals came one after another") }
        return try await base.renew(lease, for: duration)
    }
}
