import CoreMetrics
import Dedup
import DedupRedis
import Logging

extension RedisStreamConsumer {
    /// Runs one entry through the dedup consumer in a way of the caller's choosing and returns the
    /// consumer's answer: for processing the handler alone cannot express, such as SQLite's
    /// transactional mode (`IdempotentConsumer.processInTransaction`), where the effect commits
    /// with the completion.
    ///
    /// The runner applies its ack rules to what it returns, exactly as to its own processing: an
    /// outcome that says ack (``/Dedup/ProcessOutcome/shouldAck``) is acked; ``/Dedup/ProcessOutcome/deferred(retryAfter:)``
    /// and a thrown error leave the entry pending. A thrown error counts toward
    /// ``Configuration/maxDeliveries`` (the entry is dead-lettered when it is thrown on the last
    /// delivery) unless it is a ``/Dedup/DedupError`` that is a store failure
    /// (``/Dedup/DedupError/isStoreFailure``: busy, unreachable, a full disk, …) or
    /// ``/Dedup/DedupError/Code/leaseLost``, or a `CancellationError`: those say nothing about the
    /// entry. So a statement of a transactional handler that fails because of the statement or its
    /// data (``/Dedup/DedupError/Code/handlerStatementFailed``: a constraint, an SQL error) counts,
    /// and the store's own failure does not.
    public typealias EntryProcessor = @Sendable (StreamEntry) async throws -> ProcessOutcome

    /// Creates a consumer that hands every entry to `processEntry` instead of processing it with a
    /// handler: `processEntry` must run the entry through `consumer` (with the entry's key and its
    /// broker time, `entry.id.brokerTime`); ``Configuration/keyStrategy`` is not used. In
    /// ``ProcessingMode/batch`` the entries of one read go through `processEntry` one after
    /// another and are acked together.
    ///
    /// ```swift
    /// let orders = try RedisStreamConsumer(url: url, configuration: configuration, consumer: dedup) { entry in
    ///     try await dedup.processInTransaction(key: entry["order"], brokerTime: entry.id.brokerTime) { transaction, _ in
    ///         try transaction.execute("INSERT INTO charges(order_id) VALUES (?)", [.text(entry["order"] ?? "")])
    ///     }
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - url: the Redis server holding the stream, as in
    ///     ``init(url:configuration:consumer:logger:metricsFactory:onSettled:handler:)``.
    ///   - configuration: stream, group, limits and policies.
    ///   - consumer: the dedup consumer `processEntry` uses; its lease bounds
    ///     ``Configuration/reclaimIdleTime``.
    ///   - logger: where to log; `Logger.current` when `nil`.
    ///   - metricsFactory: where metrics go; the bootstrapped `MetricsSystem` when `nil`.
    ///   - onSettled: called once per processed entry, after it was acked, left pending or
    ///     dead-lettered.
    ///   - processEntry: processes one entry and returns the dedup consumer's answer.
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for a malformed URL or configuration.
    public init(
        url: String,
        configuration: Configuration,
        consumer: IdempotentConsumer,
        logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil,
        onSettled: (@Sendable (Settlement) -> Void)? = nil,
        processEntry: @escaping EntryProcessor
    ) throws(DedupError) {
        try self.init(
            url: url,
            configuration: configuration,
            consumer: consumer,
            logger: logger,
            metricsFactory: metricsFactory,
            onSettled: onSettled,
            handler: { _, _ in
                preconditionFailure("an entry processor replaces the handler")
            }
        )
        self.entryProcessor = processEntry
    }

    /// `processor`'s answer for `entry`, its error as a failure.
    func processed(_ entry: StreamEntry, by processor: EntryProcessor) async -> Result<ProcessOutcome, any Error> {
        do {
            return .success(try await processor(entry))
        } catch {
            return .failure(error)
        }
    }
}
