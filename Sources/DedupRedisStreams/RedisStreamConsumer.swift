import CoreMetrics
import Dedup
import DedupRedis
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Reads one Redis stream as one consumer of a consumer group and applies every entry once,
/// through an ``/Dedup/IdempotentConsumer``: a `ServiceLifecycle` service.
///
/// ```swift
/// let store = try RedisDedupStore(url: "redis://127.0.0.1:6379")
/// let dedup = try IdempotentConsumer(store: store, namespace: "billing")
/// let orders = try RedisStreamConsumer(
///     url: "redis://127.0.0.1:6379", configuration: .init(stream: "orders", group: "billing"), consumer: dedup
/// ) { entry, context in
///     try await charge(order: entry["order"], fencingToken: context.fencingToken)
/// }
/// try await ServiceGroup(services: [orders], logger: logger).run()
/// ```
///
/// What it does, in order:
/// - creates the group if it is missing (`XGROUP CREATE … MKSTREAM` at
///   ``Configuration/startPosition``), and again, from the stream's beginning, if the stream is
///   deleted under it (`NOGROUP`);
/// - processes the entries this consumer had read but not acked (`XREADGROUP … 0`), then new ones
///   (`XREADGROUP … >` with `BLOCK`, on a connection and a thread of its own);
/// - acks an entry (`XACK`) only once its dedup record is completed: applied, or found completed
///   (a duplicate). A handler that failed or lost its lease, a deferred entry (the key is in flight
///   elsewhere), a store error: no ack, the entry stays pending and comes again;
/// - takes over entries pending longer than ``Configuration/reclaimIdleTime`` (their consumer
///   died, or failed them) with `XAUTOCLAIM`, the scan's cursor carried from call to call;
/// - acks, counts and logs pending entries the stream no longer holds (trimmed or deleted);
/// - moves an entry whose processing failed on its ``Configuration/maxDeliveries``-th delivery to
///   the dead-letter stream, with its fields, original ID, delivery count and last error, and acks
///   it, in one script, so it is moved exactly once however many consumers fail it at once;
/// - on graceful shutdown stops reading, lets the handlers in flight finish and ack, and returns;
///   on cancellation the handlers are cancelled too (their entries stay pending);
/// - survives Redis going away: it retries with backoff, then processes its pending entries again;
/// - counts entries read, acked, reclaimed, dead-lettered and trimmed, and gauges the group's lag
///   (`dedup.stream.entries` by `event`, `dedup.stream.lag`).
///
/// Errors that retrying cannot mend (a key that is not a stream, a refused login) end
/// ``run()`` with a ``/Dedup/DedupError``.
public struct RedisStreamConsumer: Service {
    /// The side effect for one entry; it runs at most once per dedup key within the retention.
    public typealias Handler = @Sendable (StreamEntry, DedupContext) async throws -> Void

    /// What became of one entry after its processing: for logs, metrics and tests.
    public struct Settlement: Sendable {
        /// What was done with the entry in the stream.
        public enum Action: Hashable, Sendable {
            /// Acked: its record is completed (or the handler ran without dedup, by policy).
            case acked
            /// Left pending: it comes again (to this consumer on restart, or to any after the
            /// reclaim idle time).
            case leftPending
            /// Moved to the dead-letter stream and acked, by this consumer.
            case deadLettered
        }

        /// The entry.
        public var entryID: StreamEntryID
        /// The dedup consumer's answer, or the error that kept the entry from being acked.
        public var outcome: Result<ProcessOutcome, any Error>
        /// What was done with the entry.
        public var action: Action
    }

    /// What the consumer reads and how, with its defaults resolved.
    public let configuration: Configuration
    /// Where Redis is; print ``/DedupRedis/RedisEndpoint/redactedDescription``, never the URL.
    public let endpoint: RedisEndpoint

    let consumer: IdempotentConsumer
    let handler: Handler
    let logger: Logger
    let metrics: StreamMetrics
    let onSettled: (@Sendable (Settlement) -> Void)?
    /// Set by ``init(url:configuration:consumer:logger:metricsFactory:onSettled:processEntry:)``:
    /// runs an entry through the dedup consumer in place of ``handler``.
    var entryProcessor: EntryProcessor?

    /// Creates the consumer; it connects when ``run()`` starts.
    ///
    /// - Parameters:
    ///   - url: the Redis server holding the stream (see ``/DedupRedis/RedisEndpoint``); it may be another
    ///     than the dedup store's.
    ///   - configuration: stream, group, limits and policies.
    ///   - consumer: the dedup consumer every entry goes through; its namespace is usually the
    ///     group's name.
    ///   - logger: where to log; `Logger.current` when `nil`.
    ///   - metricsFactory: where metrics go; the bootstrapped `MetricsSystem` when `nil`.
    ///   - onSettled: called once per processed entry, after it was acked, left pending or
    ///     dead-lettered.
    ///   - handler: the side effect.
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for a malformed URL or configuration.
    public init(
        url: String,
        configuration: Configuration,
        consumer: IdempotentConsumer,
        logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil,
        onSettled: (@Sendable (Settlement) -> Void)? = nil,
        handler: @escaping Handler
    ) throws(DedupError) {
        try self.init(
            endpoint: RedisEndpoint(url: url),
            configuration: configuration,
            consumer: consumer,
            logger: logger,
            metricsFactory: metricsFactory,
            onSettled: onSettled,
            handler: handler
        )
    }

    /// Creates the consumer for an endpoint; see ``init(url:configuration:consumer:logger:metricsFactory:onSettled:handler:)``.
    public init(
        endpoint: RedisEndpoint,
        configuration: Configuration,
        consumer: IdempotentConsumer,
        logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil,
        onSettled: (@Sendable (Settlement) -> Void)? = nil,
        handler: @escaping Handler
    ) throws(DedupError) {
        let configuration = try configuration.validated(lease: consumer.configuration.lease)
        self.configuration = configuration
        self.endpoint = endpoint
        self.consumer = consumer
        self.handler = handler
        var logger = logger ?? Logger.current
        logger[metadataKey: "dedup.stream"] = "\(configuration.stream)"
        logger[metadataKey: "dedup.group"] = "\(configuration.group)"
        logger[metadataKey: "dedup.consumer"] = "\(configuration.consumerName)"
        self.logger = logger
        self.metrics = StreamMetrics(
            stream: configuration.stream,
            group: configuration.group,
            factory: metricsFactory ?? MetricsSystem.factory
        )
        self.onSettled = onSettled
    }

    /// Reads and processes entries until graceful shutdown (then the handlers in flight finish
    /// and are acked) or cancellation.
    ///
    /// - Throws: a ``/Dedup/DedupError`` that retrying cannot mend (`WRONGTYPE`: the key holds no
    ///   stream; a refused login), after the handlers in flight finished.
    public func run() async throws {
        let client = StreamClient(endpoint: endpoint, configuration: configuration, logger: logger)
        // A batch is processed as one unit: in batch mode a whole read (readCount) may be in flight,
        // or every read would be cut to the in-flight limit and batches would shrink to it.
        let limit =
            configuration.processingMode == .batch
            ? max(configuration.entriesInFlight, configuration.readCount) : configuration.entriesInFlight
        let inFlight = InFlightEntries(limit: limit)
        let stop = StopSignal()
        do {
            try await withGracefulShutdownHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    try await readLoop(client: client, inFlight: inFlight, stop: stop, group: &group)
                }
            } onGracefulShutdown: {
                stop.raise()
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        logger.debug("Redis stream consumer stopped")
    }

    // MARK: Reading

    /// Where the next read comes from.
    private enum Phase: Equatable {
        /// The group must be created first (again, from the beginning, when `recreating`).
        case createGroup(recreating: Bool)
        /// This consumer's own pending entries after the ID.
        case ownPending(after: StreamEntryID)
        /// Entries not yet delivered to the group.
        case new
    }

    private func readLoop(
        client: StreamClient,
        inFlight: InFlightEntries,
        stop: StopSignal,
        group: inout ThrowingDiscardingTaskGroup<any Error>
    ) async throws {
        let clock = ContinuousClock()
        var phase = Phase.createGroup(recreating: false)
        var reclaimCursor = StreamEntryID.zero
        var nextReclaim = clock.now
        var nextLag = clock.now
        var backoff = configuration.retryBackoff
        while !stop.isRaised && !Task.isCancelled {
            let count = min(configuration.readCount, await inFlight.freeSlots())
            if stop.isRaised || Task.isCancelled { break }
            do {
                let read: StreamRead
                let now = clock.now
                // Own pending entries go first; reclaiming others' starts once they are done.
                let isReclaim = phase == .new && now >= nextReclaim
                if case .createGroup(let recreating) = phase {
                    try await createGroup(client, recreating: recreating)
                    phase = .ownPending(after: .zero)
                    continue
                } else if isReclaim {
                    let next: StreamEntryID
                    (read, next) = try await client.reclaim(
                        minimumIdle: configuration.reclaimIdleTime!,
                        cursor: reclaimCursor,
                        count: count,
                        inFlightHere: inFlight.contains
                    )
                    // A scan goes on right away until it reaches the end of the pending list.
                    reclaimCursor = next
                    nextReclaim = next == .zero ? now + configuration.reclaimInterval : now
                    metrics.reclaimed.increment(by: Int64(read.entries.count))
                    if !read.entries.isEmpty {
                        logger.info("reclaimed idle pending entries", metadata: ["count": "\(read.entries.count)"])
                    }
                } else if case .ownPending(let cursor) = phase {
                    read = try await client.readOwnPending(after: cursor, count: count)
                    let last = (read.entries.map(\.id) + read.trimmed).max()
                    phase = last.map { .ownPending(after: $0) } ?? .new
                } else {
                    let untilReclaim = nextReclaim - now
                    guard untilReclaim >= .milliseconds(1) else { continue }
                    read = try await client.readNew(count: count, block: min(configuration.blockTimeout, untilReclaim))
                }
                backoff = configuration.retryBackoff
                if !read.trimmed.isEmpty { try await ackTrimmed(read.trimmed, client: client) }
                if !read.entries.isEmpty || isReclaim, clock.now >= nextLag {
                    nextLag = clock.now + configuration.lagInterval
                    if let lag = try await client.lag() { metrics.lag.record(lag) }
                }
                dispatch(read.entries, client: client, inFlight: inFlight, group: &group)
            } catch let error as GroupMissing {
                logger.warning(
                    "the consumer group is missing (was the stream deleted?); creating it again",
                    metadata: ["error": "\(error.message)"]
                )
                phase = .createGroup(recreating: true)
            } catch let error as DedupError where error.isStoreUnreachable {
                let wait = backoff
                logger.warning(
                    "Redis stream unreachable; retrying",
                    metadata: ["error": "\(error)", "retryIn": "\(wait)"]
                )
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
                backoff = min(backoff * 2, configuration.maximumRetryBackoff)
                // Entries read but not acked before the failure are pending: read them again.
                if case .createGroup = phase {} else { phase = .ownPending(after: .zero) }
            }
        }
    }

    private func createGroup(_ client: StreamClient, recreating: Bool) async throws {
        // A stream recreated after a deletion holds only entries published since: all are new.
        let position = recreating ? "0" : configuration.startPosition.groupID
        if try await client.createGroup(at: position) {
            logger.info("created the consumer group", metadata: ["position": "\(position)"])
        }
    }

    /// Pending entries whose stream entries are gone cannot be processed: ack them so they stop
    /// coming, and say so.
    private func ackTrimmed(_ ids: [StreamEntryID], client: StreamClient) async throws {
        metrics.trimmed.increment(by: Int64(ids.count))
        logger.warning(
            "pending entries were trimmed from the stream before they were processed; acking them",
            metadata: ["count": "\(ids.count)", "ids": "\(ids.prefix(10).map(\.description))"]
        )
        _ = try await client.ack(ids)
    }
}

/// Set once graceful shutdown begins; read by the read loop.
private final class StopSignal: Sendable {
    private let raised = Atomic<Bool>(false)
    var isRaised: Bool { raised.load(ordering: .acquiring) }
    func raise() { raised.store(true, ordering: .releasing) }
}
