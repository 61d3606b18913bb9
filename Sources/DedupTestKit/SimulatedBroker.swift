import Dedup
import Foundation
import Synchronization

/// An at-least-once message broker in memory, to point your own handlers at: it redelivers until a
/// message is acked, injects duplicates, lets a consumer crash mid-handler, and replays a topic from a
/// timestamp, the ways real brokers deliver a message more than once.
///
/// The broker knows nothing of dedup. It hands ``Delivery`` values to a handler closure and acts on
/// the ``Ack`` the handler returns; the handler decides how to process (typically through an
/// `IdempotentConsumer`):
///
/// ```swift
/// let clock = ManualDedupClock()
/// let broker = SimulatedBroker(configuration: .init(seed: 42, duplicateRate: 0.1, crashRate: 0.02), clock: clock)
/// for order in orders { broker.publish(key: order.id, payload: order.json) }
/// try await broker.run(consumers: 4) { delivery in
///     if delivery.plannedCrash == .beforeSideEffect { return .crash }
///     let outcome = try await consumer.process(key: delivery.message.key, brokerTime: delivery.message.publishedAt) { _ in
///         try await apply(delivery.message)
///     }
///     if case .deferred(let retryAfter) = outcome { return .retry(after: retryAfter) }
///     return .ack
/// }
/// ```
///
/// Pass the message's ``Message/publishedAt`` as the consumer's `brokerTime`, as an adapter passes a
/// real broker's time: the record keeps it, and a reset of a time range (`RecordFilter`,
/// `dedup-inspect reset --from --until`) then selects the messages published in it, however late
/// they were processed.
///
/// **Time.** Every message carries its publish time and every redelivery is due at a time. On a
/// ``ManualDedupClock`` the broker runs in virtual time: when nothing is due and no handler is
/// running, it moves the clock straight to the next due delivery, so a run with 30-second leases
/// takes milliseconds. Give the same clock to the store (`InMemoryDedupStore(clock:)`, or any store
/// taking a ``/Dedup/DedupClock``) so leases pass when the broker's time does; handlers should not wait for
/// time to pass on their own then (use a defer policy, not a wait policy). Without a clock the broker
/// uses the system clock and really waits.
///
/// **Determinism.** Which messages get a duplicate and which deliveries are planned to crash depend
/// only on the ``Configuration/seed`` and on the order of ``publish(key:payload:id:at:)`` and
/// ``replay(from:)`` calls, never on how consumers interleave. With one consumer and a manual clock
/// a whole run is reproducible.
public final class SimulatedBroker: Sendable {
    // MARK: Types

    /// A message in the topic.
    public struct Message: Hashable, Sendable {
        /// The message ID (unique per published message; duplicates and replays share it).
        public let id: String
        /// The business key (order number, payment ID).
        public let key: String
        /// The message body.
        public let payload: Data
        /// When it was published (millisecond precision): the broker time to pass to the consumer
        /// (`IdempotentConsumer.process(key:fingerprint:brokerTime:_:)`).
        public let publishedAt: Date
        /// Its position in the topic, from 0.
        public let offset: Int
    }

    /// Why a copy of a message is in the broker.
    public enum DeliveryReason: String, Hashable, Sendable, CaseIterable {
        /// Published once, delivered until acked.
        case published
        /// An extra copy the broker injected, as a producer retry or a rebalance would.
        case injectedDuplicate = "injected_duplicate"
        /// Re-sent by ``SimulatedBroker/replay(from:)``, as a consumer group's offset reset would.
        case replay
    }

    /// Where a delivery is planned to crash; a hint the handler may act on (see
    /// ``Configuration/crashRate``).
    public enum CrashPoint: String, Hashable, Sendable, CaseIterable {
        /// The consumer dies before the handler's side effect.
        case beforeSideEffect = "before_side_effect"
        /// The consumer dies after the side effect, before it acks (or records completion).
        case afterSideEffect = "after_side_effect"
    }

    /// Which consumer got a delivery. A consumer that crashes comes back as the next incarnation of
    /// the same index, as a restarted process would.
    public struct ConsumerID: Hashable, Sendable, CustomStringConvertible {
        /// The consumer's slot, from 0 to the number of consumers - 1.
        public let index: Int
        /// How many times this slot has crashed before.
        public let incarnation: Int

        /// Creates a consumer identity.
        public init(index: Int, incarnation: Int = 0) {
            self.index = index
            self.incarnation = incarnation
        }

        /// `consumer-2#1`: slot 2, restarted once.
        public var description: String { "consumer-\(index)#\(incarnation)" }
    }

    /// One handoff of a message to a consumer.
    public struct Delivery: Hashable, Sendable, Identifiable {
        /// Unique per handoff, increasing.
        public let id: Int
        /// The message delivered.
        public let message: Message
        /// Which copy of the message this is: unique per copy, kept across its redeliveries.
        public let copy: Int
        /// Why the copy exists.
        public let reason: DeliveryReason
        /// How many times this copy has been handed out, this time included (1 the first time).
        public let deliveryCount: Int
        /// Who got it.
        public let consumer: ConsumerID
        /// When it was handed out (broker clock).
        public let deliveredAt: Date
        /// Set when the seeded crash plan says this delivery should crash, and where; `nil` otherwise.
        public let plannedCrash: CrashPoint?

        /// `true` when this copy was handed out before (after a nack, a retry or a crash).
        public var isRedelivery: Bool { deliveryCount > 1 }
    }

    /// What a handler tells the broker about a delivery.
    public enum Ack: Hashable, Sendable {
        /// Done: the copy is removed.
        case ack
        /// Not done: redeliver after ``Configuration/redeliveryDelay``.
        case nack
        /// Not done: redeliver after this long (an `IdempotentConsumer`'s `deferred(retryAfter:)`).
        case retry(after: Duration)
        /// The consumer died holding the message without acking: the broker notices after
        /// ``Configuration/crashRedeliveryDelay`` (a session timeout) and redelivers the copy, and the
        /// consumer's slot restarts as a new incarnation.
        case crash
    }

    /// How the broker misbehaves.
    public struct Configuration: Hashable, Sendable {
        /// Seeds every random decision.
        public var seed: UInt64
        /// The share of published messages (0...1) that get one extra, injected copy.
        public var duplicateRate: Double
        /// An injected copy is due up to this long after the original (uniformly, seeded); zero puts it
        /// right behind the original, so two consumers get both at once.
        public var duplicateDelay: Duration
        /// The share of deliveries (0...1) planned to crash, half before and half after the side
        /// effect; the plan is in ``Delivery/plannedCrash`` and the handler acts on it.
        public var crashRate: Double
        /// How long after a ``Ack/nack`` a copy is redelivered.
        public var redeliveryDelay: Duration
        /// How long after a ``Ack/crash`` a copy is redelivered.
        public var crashRedeliveryDelay: Duration
        /// After this many deliveries of one copy without an ack, the copy goes to the dead letters
        /// instead of back to the queue; `nil` redelivers forever. Keeps a handler that never acks
        /// from running a test forever.
        public var maximumDeliveries: Int?

        /// Creates a configuration. Defaults: seed 1, no duplicates, no crashes, nacks redelivered
        /// after 1 s, crashes after 30 s, at most 100 deliveries of a copy.
        public init(
            seed: UInt64 = 1,
            duplicateRate: Double = 0,
            duplicateDelay: Duration = .zero,
            crashRate: Double = 0,
            redeliveryDelay: Duration = .seconds(1),
            crashRedeliveryDelay: Duration = .seconds(30),
            maximumDeliveries: Int? = 100
        ) {
            self.seed = seed
            self.duplicateRate = duplicateRate
            self.duplicateDelay = duplicateDelay
            self.crashRate = crashRate
            self.redeliveryDelay = redeliveryDelay
            self.crashRedeliveryDelay = crashRedeliveryDelay
            self.maximumDeliveries = maximumDeliveries
        }
    }

    /// What the broker has done so far.
    public struct Counters: Hashable, Sendable {
        /// Messages published.
        public var published = 0
        /// Handoffs to consumers, redeliveries included.
        public var delivered = 0
        /// Deliveries acked.
        public var acknowledged = 0
        /// Deliveries nacked or retried.
        public var negativelyAcknowledged = 0
        /// Extra copies injected.
        public var duplicatesInjected = 0
        /// Handoffs of a copy handed out before.
        public var redeliveries = 0
        /// Deliveries whose consumer crashed.
        public var crashes = 0
        /// Copies sent again by ``SimulatedBroker/replay(from:)``.
        public var replayed = 0
        /// Copies given up after ``Configuration/maximumDeliveries``.
        public var deadLettered = 0

        /// All zero.
        public init() {}
    }

    // MARK: State

    private enum TimeSource: Sendable {
        case virtual(ManualDedupClock)
        case real(SystemDedupClock)

        func now() -> Int64 {
            switch self {
            case .virtual(let clock): return clock.nowMilliseconds()
            case .real(let clock): return clock.nowMilliseconds()
            }
        }
    }

    private struct Copy {
        let number: Int
        let offset: Int
        let reason: DeliveryReason
        var deliveries = 0
    }

    private struct State {
        var log: [Message] = []
        var queue = DueQueue<Copy>()
        var handedOut: [Int: Copy] = [:]
        var counters = Counters()
        var deadLetters: [Message] = []
        var nextCopy = 0
        var nextDelivery = 0
        /// Bumped on every change a waiting consumer may care about.
        var generation = 0
        var waiters: [CheckedContinuation<Void, Never>] = []

        mutating func changed() -> [CheckedContinuation<Void, Never>] {
            generation &+= 1
            defer { waiters = [] }
            return waiters
        }
    }

    /// How the broker misbehaves.
    public let configuration: Configuration
    private let time: TimeSource
    private let state = Mutex(State())

    /// A broker in virtual time on `clock`: when nothing is due and no handler runs, it moves the
    /// clock to the next due delivery.
    public init(configuration: Configuration = Configuration(), clock: ManualDedupClock) {
        self.configuration = configuration
        self.time = .virtual(clock)
    }

    /// A broker on the system clock: redeliveries wait in real time.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.time = .real(SystemDedupClock())
    }

    /// The broker's time.
    public var now: Date { Date(millisecondsSince1970: time.now()) }

    /// Every message published, in order.
    public var messages: [Message] { state.withLock { $0.log } }

    /// What the broker has done so far.
    public var counters: Counters { state.withLock { $0.counters } }

    /// Copies not yet acked: queued, or handed out and not yet settled.
    public var pendingCount: Int { state.withLock { $0.queue.count + $0.handedOut.count } }

    /// Messages of copies given up after ``Configuration/maximumDeliveries``, in the order given up.
    public var deadLetters: [Message] { state.withLock { $0.deadLetters } }

    // MARK: Producing

    /// Appends a message to the topic and queues it for delivery, plus, at the configured rate, an
    /// injected duplicate copy.
    ///
    /// - Parameters:
    ///   - key: The business key.
    ///   - payload: The body.
    ///   - id: The message ID; `message-<offset>` by default.
    ///   - timestamp: The publish time; the broker's now by default (pass one to lay out a backlog
    ///     over time without waiting).
    @discardableResult
    public func publish(key: String, payload: Data = Data(), id: String? = nil, at timestamp: Date? = nil) -> Message {
        let now = time.now()
        let (message, waiters) = state.withLock { state -> (Message, [CheckedContinuation<Void, Never>]) in
            let offset = state.log.count
            let message = Message(
                id: id ?? "message-\(offset)",
                key: key,
                payload: payload,
                publishedAt: timestamp.map { Date(millisecondsSince1970: $0.millisecondsSince1970) }
                    ?? Date(millisecondsSince1970: now),
                offset: offset
            )
            state.log.append(message)
            state.counters.published += 1
            enqueueNewCopy(of: offset, reason: .published, due: now, into: &state)
            if unitRandom(1, UInt64(offset)) < configuration.duplicateRate {
                let delay = configuration.duplicateDelay * unitRandom(2, UInt64(offset))
                enqueueNewCopy(of: offset, reason: .injectedDuplicate, due: now + delay.wholeMilliseconds, into: &state)
                state.counters.duplicatesInjected += 1
            }
            return (message, state.changed())
        }
        for waiter in waiters { waiter.resume() }
        return message
    }

    /// Sends every message published at or after `timestamp` again, in topic order, as a consumer
    /// group's offset reset to a time does (RocketMQ `resetOffsetByTime`, Kafka
    /// `--reset-offsets --to-datetime`). Replayed copies get no injected duplicates.
    ///
    /// - Returns: How many messages were replayed.
    @discardableResult
    public func replay(from timestamp: Date) -> Int {
        let now = time.now()
        let from = timestamp.millisecondsSince1970
        let (count, waiters) = state.withLock { state -> (Int, [CheckedContinuation<Void, Never>]) in
            var count = 0
            for message in state.log where message.publishedAt.millisecondsSince1970 >= from {
                enqueueNewCopy(of: message.offset, reason: .replay, due: now, into: &state)
                count += 1
            }
            state.counters.replayed += count
            return (count, state.changed())
        }
        for waiter in waiters { waiter.resume() }
        return count
    }

    // MARK: Consuming

    /// Hands the next due copy to `consumer`, or returns `nil` when none is due now. Every delivery
    /// must be settled with ``settle(_:with:)``. For stepping a scenario by hand; ``run(consumers:handler:)``
    /// does this in a loop.
    public func nextDelivery(for consumer: ConsumerID = ConsumerID(index: 0)) -> Delivery? {
        let now = time.now()
        return state.withLock { state in handOut(to: consumer, now: now, state: &state) }
    }

    /// Settles a delivery: an ack removes the copy; a nack, a retry or a crash queues it again after
    /// the matching delay (or dead-letters it after ``Configuration/maximumDeliveries``).
    ///
    /// - Precondition: `delivery` came from this broker and was not settled before.
    public func settle(_ delivery: Delivery, with ack: Ack) {
        let now = time.now()
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard let copy = state.handedOut.removeValue(forKey: delivery.id) else {
                preconditionFailure("delivery \(delivery.id) was settled twice or is not from this broker")
            }
            switch ack {
            case .ack:
                state.counters.acknowledged += 1
            case .nack:
                state.counters.negativelyAcknowledged += 1
                requeue(copy, due: now + configuration.redeliveryDelay.wholeMilliseconds, state: &state)
            case .retry(let delay):
                state.counters.negativelyAcknowledged += 1
                requeue(copy, due: now + delay.wholeMilliseconds, state: &state)
            case .crash:
                state.counters.crashes += 1
                requeue(copy, due: now + configuration.crashRedeliveryDelay.wholeMilliseconds, state: &state)
            }
            return state.changed()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Delivers until every copy is acked (or dead-lettered), to `consumers` concurrent consumers
    /// each running `handler` on one delivery at a time.
    ///
    /// Messages published or replayed while it runs are delivered too. A consumer whose handler
    /// returns ``Ack/crash`` continues as the next incarnation of its slot.
    ///
    /// - Throws: The first error a handler throws (its delivery goes back to the queue, due now, and
    ///   the other consumers stop after their current delivery), or `CancellationError`.
    public func run(
        consumers: Int = 1,
        handler: @escaping @Sendable (Delivery) async throws -> Ack
    ) async throws {
        precondition(consumers >= 1, "a run needs at least one consumer")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<consumers {
                group.addTask { try await self.consume(slot: index, handler: handler) }
            }
            do {
                try await group.waitForAll()
            } catch {
                group.cancelAll()
                wakeAll()
                throw error
            }
        }
    }

    private enum Step {
        case deliver(Delivery)
        case finished
        case waitForChange(generation: Int)
        case sleep(Duration)
    }

    private func consume(slot: Int, handler: @Sendable (Delivery) async throws -> Ack) async throws {
        var consumer = ConsumerID(index: slot)
        var handled = 0
        while true {
            try Task.checkCancellation()
            switch nextStep(for: consumer) {
            case .deliver(let delivery):
                handled += 1
                // A handler that never suspends would otherwise hold a cooperative thread for the
                // whole run, starving every other task in the process.
                if handled.isMultiple(of: 16) { await Task.yield() }
                let ack: Ack
                do {
                    ack = try await handler(delivery)
                } catch {
                    putBack(delivery)
                    throw error
                }
                settle(delivery, with: ack)
                if ack == .crash { consumer = ConsumerID(index: slot, incarnation: consumer.incarnation + 1) }
            case .finished:
                return
            case .waitForChange(let generation):
                await waitForChange(after: generation)
            case .sleep(let duration):
                try await Task.sleep(for: duration)
            }
        }
    }

    private func nextStep(for consumer: ConsumerID) -> Step {
        let now = time.now()
        return state.withLock { state -> Step in
            if let delivery = handOut(to: consumer, now: now, state: &state) { return .deliver(delivery) }
            guard let due = state.queue.nextDue else {
                return state.handedOut.isEmpty ? .finished : .waitForChange(generation: state.generation)
            }
            switch time {
            case .virtual(let clock):
                // Nothing due: if no handler runs either, nothing can happen before `due`; skip to it.
                guard state.handedOut.isEmpty else { return .waitForChange(generation: state.generation) }
                if due > clock.nowMilliseconds() { clock.set(milliseconds: due) }
                if let delivery = handOut(to: consumer, now: due, state: &state) { return .deliver(delivery) }
                return .waitForChange(generation: state.generation)
            case .real:
                // Capped, so a copy queued meanwhile with an earlier due time is not picked up late.
                return .sleep(.milliseconds(min(max(due - now, 1), 10)))
            }
        }
    }

    private func waitForChange(after generation: Int) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    guard state.generation == generation else { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            wakeAll()
        }
    }

    private func wakeAll() {
        let waiters = state.withLock { $0.changed() }
        for waiter in waiters { waiter.resume() }
    }

    /// A delivery whose handler threw: back to the front of the queue, not counted as settled.
    private func putBack(_ delivery: Delivery) {
        let now = time.now()
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            if let copy = state.handedOut.removeValue(forKey: delivery.id) {
                state.queue.insert(copy, due: now)
            }
            return state.changed()
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Helpers (called under the lock)

    private func enqueueNewCopy(of offset: Int, reason: DeliveryReason, due: Int64, into state: inout State) {
        let copy = Copy(number: state.nextCopy, offset: offset, reason: reason)
        state.nextCopy += 1
        state.queue.insert(copy, due: due)
    }

    private func requeue(_ copy: Copy, due: Int64, state: inout State) {
        if let maximum = configuration.maximumDeliveries, copy.deliveries >= maximum {
            state.counters.deadLettered += 1
            state.deadLetters.append(state.log[copy.offset])
        } else {
            state.queue.insert(copy, due: due)
        }
    }

    private func handOut(to consumer: ConsumerID, now: Int64, state: inout State) -> Delivery? {
        guard var copy = state.queue.popDue(now: now) else { return nil }
        copy.deliveries += 1
        let id = state.nextDelivery
        state.nextDelivery += 1
        state.handedOut[id] = copy
        state.counters.delivered += 1
        if copy.deliveries > 1 { state.counters.redeliveries += 1 }
        var plannedCrash: CrashPoint?
        if unitRandom(3, UInt64(copy.number), UInt64(copy.deliveries)) < configuration.crashRate {
            plannedCrash =
                unitRandom(4, UInt64(copy.number), UInt64(copy.deliveries)) < 0.5 ? .beforeSideEffect : .afterSideEffect
        }
        return Delivery(
            id: id,
            message: state.log[copy.offset],
            copy: copy.number,
            reason: copy.reason,
            deliveryCount: copy.deliveries,
            consumer: consumer,
            deliveredAt: Date(millisecondsSince1970: now),
            plannedCrash: plannedCrash
        )
    }

    /// A uniform number in [0, 1) from the seed and `parts` alone (SplitMix64 over the parts), so a
    /// decision does not depend on the order in which other decisions were made.
    private func unitRandom(_ parts: UInt64...) -> Double {
        var hash = configuration.seed
        for part in parts {
            hash = splitMix(hash ^ splitMix(part &+ SplitMix64.increment))
        }
        return Double(hash >> 11) * 0x1p-53
    }

    /// One step of ``SplitMix64`` from `value`.
    private func splitMix(_ value: UInt64) -> UInt64 {
        SplitMix64.mix(value &+ SplitMix64.increment)
    }
}

/// A min-heap of items by (due time, insertion order): the broker's queue.
private struct DueQueue<Item> {
    private struct Entry {
        let due: Int64
        let sequence: Int
        let item: Item
        func precedes(_ other: Entry) -> Bool { (due, sequence) < (other.due, other.sequence) }
    }

    private var heap: [Entry] = []
    private var nextSequence = 0

    var count: Int { heap.count }
    var nextDue: Int64? { heap.first?.due }

    mutating func insert(_ item: Item, due: Int64) {
        heap.append(Entry(due: due, sequence: nextSequence, item: item))
        nextSequence += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest item due at or before `now`.
    mutating func popDue(now: Int64) -> Item? {
        guard let first = heap.first, first.due <= now else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < heap.count, heap[left].precedes(heap[smallest]) { smallest = left }
                if right < heap.count, heap[right].precedes(heap[smallest]) { smallest = right }
                if smallest == parent { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first.item
    }
}
