import CoreMetrics
import Foundation
import Logging

/// Wraps a message handler so each message is applied once: claim the key, run the handler,
/// record the completion — or skip a duplicate, defer a message in flight elsewhere.
///
/// ```swift
/// let consumer = try IdempotentConsumer(store: store, namespace: "billing-group")
/// let outcome = try await consumer.process(key: message.id) { context in
///     try await charge(message, fencingToken: context.fencingToken)
/// }
/// if outcome.shouldAck { try await message.ack() } else { try await message.nack() }
/// ```
///
/// The handler runs in the caller's task (no hop to another executor). While it runs, a shared
/// background task renews its lease every ``ConsumerConfiguration/renewalInterval``; if renewal is
/// refused the lease is lost: ``DedupContext/isLeaseLost`` turns `true`,
/// ``DedupContext/checkLease()`` throws, and `process` throws ``DedupError/Code/leaseLost`` without
/// recording the result.
public struct IdempotentConsumer: Sendable {
    /// The store records live in.
    public let store: any DedupStore
    /// Who consumes: every key of this consumer lives in this namespace.
    public let namespace: String
    /// How the consumer behaves.
    public let configuration: ConsumerConfiguration

    let logger: Logger
    package let metrics: ConsumerMetrics
    let keeper: LeaseKeeper?
    let cache: LocalCache?
    /// ``ConsumerConfiguration/lease`` in nanoseconds, for the local deadlines of a batch's leases.
    let leaseNanoseconds: Int64

    /// Creates a consumer.
    ///
    /// - Parameters:
    ///   - store: Where records live; share it between consumers of the same group.
    ///   - namespace: The consumer group or service name (1–128 UTF-8 bytes).
    ///   - configuration: Leases, retention and policies; each property says its default.
    ///   - logger: Where to log; `Logger.current` when `nil`. The library never bootstraps logging.
    ///   - metricsFactory: Where metrics go; the bootstrapped `MetricsSystem` when `nil`.
    /// - Throws: ``DedupError`` for an invalid namespace or configuration.
    public init(
        store: any DedupStore,
        namespace: String,
        configuration: ConsumerConfiguration = ConsumerConfiguration(),
        logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(DedupError) {
        try RecordID.validate(namespace: namespace)
        self.store = store
        self.namespace = namespace
        self.configuration = try configuration.validated()
        var logger = logger ?? Logger.current
        logger[metadataKey: "dedup.namespace"] = "\(namespace)"
        logger[metadataKey: "dedup.owner"] = "\(self.configuration.ownerLabel)"
        self.logger = logger
        let metrics = ConsumerMetrics(namespace: namespace, factory: metricsFactory ?? MetricsSystem.factory)
        self.metrics = metrics
        self.keeper = configuration.renewalInterval.map {
            LeaseKeeper(store: store, lease: configuration.lease, renewalInterval: $0, metrics: metrics, logger: logger)
        }
        self.cache = configuration.localCache.map(LocalCache.init)
        self.leaseNanoseconds = configuration.lease.saturatingNanoseconds
    }

    // MARK: One message

    /// Processes one message by key.
    ///
    /// - Parameters:
    ///   - key: The message ID or business key; `nil` or empty means the message has none
    ///     (``ConsumerConfiguration/missingKeyPolicy`` decides).
    ///   - fingerprint: A digest of the payload; a key seen with another fingerprint throws
    ///     ``DedupError/Code/payloadMismatch``.
    ///   - brokerTime: When the broker took the message (a stream entry ID's milliseconds, a
    ///     RocketMQ store time, a Kafka log-append time), kept on the record so a replay of a broker
    ///     time range selects it (``DedupRecord/brokerTime``).
    ///   - handler: The side effect. It runs at most once per key within the retention, never
    ///     concurrently for one key while a lease is live.
    /// - Returns: ``ProcessOutcome/applied``, ``ProcessOutcome/duplicate(_:)``,
    ///   ``ProcessOutcome/deferred(retryAfter:)`` or ``ProcessOutcome/bypassed(_:)``.
    /// - Throws: the handler's error (the claim was released, so a redelivery runs it again), or a
    ///   ``DedupError`` (invalid key, store failure under fail-closed, lease lost, payload mismatch).
    ///   Do not ack a message whose processing threw.
    public func process(
        key: String?,
        fingerprint: String? = nil,
        brokerTime: Date? = nil,
        _ handler: (DedupContext) async throws -> Void
    ) async throws -> ProcessOutcome {
        try await run(key: key, fingerprint: fingerprint, brokerTime: brokerTime) { context in
            try await handler(context)
            return nil
        }.outcome
    }

    /// Processes one message by key with a handler that returns a value; the value is stored with
    /// the completion (JSON, up to ``ConsumerConfiguration/maximumResultBytes``) and handed back to
    /// later duplicates.
    public func process<Value: Codable & Sendable>(
        key: String?,
        fingerprint: String? = nil,
        brokerTime: Date? = nil,
        returning: Value.Type = Value.self,
        _ handler: (DedupContext) async throws -> Value
    ) async throws -> ProcessResult<Value> {
        var value: Value?
        let (outcome, stored) = try await run(key: key, fingerprint: fingerprint, brokerTime: brokerTime) { context in
            let result = try await handler(context)
            value = result
            // The side effect has happened: a result that cannot be encoded is not stored, but it
            // must not turn a success into a failure (that would release the key and run it again).
            guard let encoded = try? JSONEncoder().encode(result) else {
                logger.warning("handler result could not be encoded as JSON; duplicates will get no result")
                return nil
            }
            return encoded
        }
        if case .duplicate(let record) = outcome, let bytes = record.result {
            value = try? JSONDecoder().decode(Value.self, from: bytes)
        }
        _ = stored
        return ProcessResult(outcome: outcome, value: value)
    }

    /// Processes one message whose key a ``KeyStrategy`` finds.
    public func process<Message>(
        _ message: Message,
        keyStrategy: KeyStrategy<Message>,
        fingerprint: String? = nil,
        brokerTime: Date? = nil,
        _ handler: (Message, DedupContext) async throws -> Void
    ) async throws -> ProcessOutcome {
        try await process(key: keyStrategy.key(for: message), fingerprint: fingerprint, brokerTime: brokerTime) {
            context in
            try await handler(message, context)
        }
    }

    /// The whole single-message path; `handler` returns the bytes to store, if any.
    private func run(
        key: String?,
        fingerprint: String?,
        brokerTime: Date?,
        _ handler: (DedupContext) async throws -> Data?
    ) async throws -> (outcome: ProcessOutcome, stored: Data?) {
        guard let key, !key.isEmpty else {
            return try await runWithoutKey(handler)
        }
        let id = try RecordID(namespace: namespace, key: key, limits: configuration.identityLimits)
        if let cache, let record = cache.completedRecord(for: id) {
            metrics.cacheHits.increment()
            return (.duplicate(record), nil)
        }
        var waiter = InFlightWaiter(configuration)
        while true {
            let request = ClaimRequest(
                id: id,
                lease: configuration.lease,
                retention: configuration.retention,
                fingerprint: fingerprint,
                ownerLabel: configuration.ownerLabel,
                brokerTime: brokerTime
            )
            let claimStarted = MonotonicInstant.now
            let answer: ClaimAnswer
            do {
                answer = try await store.claim(request)
                metrics.claimDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: claimStarted))
            } catch {
                return try await storeFailedOnClaim(error, id: id, handler)
            }
            switch answer {
            case .acquired(let lease):
                countAcquired(lease)
                return try await runAcquired(lease, claimStarted: claimStarted, handler)
            case .duplicate(let record):
                metrics.duplicate.increment()
                cache?.insert(record)
                return (.duplicate(record), nil)
            case .payloadMismatch(let record):
                metrics.payloadMismatch.increment()
                throw Self.mismatch(record, fingerprint: fingerprint)
            case .inFlight(let record):
                countInFlight(record)
                if try await waiter.waitBeforeRetrying() { continue }
                return (.deferred(retryAfter: retryAfter(for: record)), nil)
            }
        }
    }

    private func runAcquired(
        _ lease: Lease,
        claimStarted: MonotonicInstant,
        _ handler: (DedupContext) async throws -> Data?
    ) async throws -> (outcome: ProcessOutcome, stored: Data?) {
        let registration = keeper?.register(lease, claimStarted: claimStarted)
        let watch = registration?.1
        let result: Data?
        do {
            result = try await handler(DedupContext(lease: lease, watch: watch))
        } catch {
            if let registration { keeper?.unregister(registration.0) }
            metrics.handlerFailures.increment()
            // A lost lease belongs to someone else now: releasing it would only be refused.
            if watch?.isLost != true {
                await releaseAfterFailure(watch?.currentLease ?? lease, handlerError: error)
            }
            throw error
        }
        if let registration { keeper?.unregister(registration.0) }
        let current = watch?.currentLease ?? lease
        if let watch, watch.isLost {
            throw DedupError(
                .leaseLost,
                "the lease on \(lease.id) was lost while the handler ran; its result is not recorded",
                underlyingError: watch.renewalFailure
            )
        }
        let stored = storable(result, id: lease.id)
        let completion = Completion(lease: current, retention: configuration.retention, result: stored)
        try await completeWithRetry(completion)
        if cache != nil {
            let now = Date()
            cache?.insert(
                DedupRecord(
                    id: lease.id,
                    state: .completed,
                    ownerToken: nil,
                    fencingToken: lease.fencingToken,
                    attempt: lease.attempt,
                    createdAt: now,
                    leaseUntil: nil,
                    completedAt: now,
                    expiresAt: now + configuration.retention.timeInterval,
                    result: stored
                )
            )
        }
        return (.applied, stored)
    }

    func runWithoutKey(
        _ handler: (DedupContext) async throws -> Data?
    ) async throws -> (
        outcome: ProcessOutcome, stored: Data?
    ) {
        switch configuration.missingKeyPolicy {
        case .reject:
            throw DedupError(.missingKey, "the message has no dedup key (the key strategy returned nil or empty)")
        case .bypass:
            metrics.bypassed.increment()
            logger.debug("processing a message without a key, as the missing-key policy allows")
            return (.bypassed(.missingKey), try await handler(DedupContext(lease: nil, watch: nil)))
        }
    }

    private func storeFailedOnClaim(
        _ error: any Error,
        id: RecordID,
        _ handler: (DedupContext) async throws -> Data?
    ) async throws -> (outcome: ProcessOutcome, stored: Data?) {
        metrics.storeError(error)
        guard configuration.storeFailurePolicy == .failOpen, let dedupError = error as? DedupError,
            dedupError.isStoreUnreachable
        else {
            // Thrown to the caller: logged only at debug, so a failure is reported once.
            logger.debug("claim failed", metadata: ["dedup.id": "\(id)", "error": "\(error)"])
            throw error
        }
        metrics.bypassed.increment()
        logger.warning(
            "store unreachable; running the handler without dedup (fail-open)",
            metadata: ["dedup.id": "\(id)", "error": "\(error)"]
        )
        return (.bypassed(.storeUnavailable), try await handler(DedupContext(lease: nil, watch: nil)))
    }

    // MARK: Helpers

    package func countAcquired(_ lease: Lease) {
        if lease.isTakeover {
            metrics.takeover.increment()
            logger.debug(
                "took over an expired lease",
                metadata: ["dedup.id": "\(lease.id)", "dedup.attempt": "\(lease.attempt)"]
            )
        } else {
            metrics.acquired.increment()
        }
    }

    /// Counts a key found in flight elsewhere and logs who holds it (at debug level: under load it
    /// is routine).
    package func countInFlight(_ record: DedupRecord) {
        metrics.inFlight.increment()
        logger.debug(
            "key in flight elsewhere",
            metadata: ["dedup.id": "\(record.id)", "dedup.holder": "\(record.ownerLabel ?? "-")"]
        )
    }

    private func completeWithRetry(_ completion: Completion) async throws {
        var delay = configuration.completionBackoff
        var attempt = 1
        while true {
            let started = MonotonicInstant.now
            do {
                try await store.complete(completion)
                metrics.completeDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: started))
                return
            } catch let error as DedupError where error.code == .leaseLost {
                // An earlier attempt may have been carried out with its reply lost: then the record is
                // completed under our fencing token, and the message is applied.
                if attempt > 1, let record = try? await store.record(for: completion.lease.id),
                    Self.isOurCompletion(record, completion.lease)
                {
                    return
                }
                metrics.leaseLosses.increment()
                throw error
            } catch {
                metrics.storeError(error)
                guard attempt < configuration.completionAttempts else {
                    // Thrown to the caller: logged only at debug, so a failure is reported once.
                    logger.debug(
                        "completion failed; the record stays in flight until its lease passes",
                        metadata: ["dedup.id": "\(completion.lease.id)", "error": "\(error)"]
                    )
                    throw error
                }
                metrics.completionRetries.increment()
                try? await Task.sleep(for: delay)
                delay *= 2
                attempt += 1
            }
        }
    }

    func completeBatchWithRetry(_ completions: [Completion]) async throws -> [CompletionAnswer] {
        var delay = configuration.completionBackoff
        var attempt = 1
        while true {
            do {
                var answers = try await store.complete(batch: completions)
                // After a failed attempt some completions may have been carried out with their replies
                // lost (or the batch failed on one item after others took effect): those records are
                // completed under our fencing tokens, and their messages are applied.
                if attempt > 1 {
                    for index in answers.indices where answers[index] == .leaseLost {
                        let lease = completions[index].lease
                        if let record = try? await store.record(for: lease.id), Self.isOurCompletion(record, lease) {
                            answers[index] = .completed
                        }
                    }
                }
                return answers
            } catch {
                metrics.storeError(error)
                guard attempt < configuration.completionAttempts else { throw error }
                metrics.completionRetries.increment()
                try? await Task.sleep(for: delay)
                delay *= 2
                attempt += 1
            }
        }
    }

    /// Whether `record` is the completion of `lease` whose reply was lost. Best effort: completed
    /// records keep no owner token, so a record completed by someone else after ours vanished (a
    /// `forget`, fencing restarting at 1) with the same fencing token and attempt would pass too;
    /// the key is completed either way.
    private static func isOurCompletion(_ record: DedupRecord, _ lease: Lease) -> Bool {
        record.state == .completed && record.fencingToken == lease.fencingToken && record.attempt == lease.attempt
    }

    func releaseAfterFailure(_ lease: Lease, handlerError: any Error) async {
        do {
            try await store.release(lease)
        } catch {
            // The handler's error is what the caller needs; an unreleased claim passes with its lease.
            metrics.storeError(error)
            logger.warning(
                "could not release the claim after the handler failed; it is retried once the lease passes",
                metadata: ["dedup.id": "\(lease.id)", "error": "\(error)", "handler.error": "\(handlerError)"]
            )
        }
    }

    private func storable(_ result: Data?, id: RecordID) -> Data? {
        guard let result else { return nil }
        guard result.count <= configuration.maximumResultBytes else {
            logger.warning(
                "handler result too large to store; duplicates will get no result",
                metadata: ["dedup.id": "\(id)", "bytes": "\(result.count)"]
            )
            return nil
        }
        return result
    }

    package func retryAfter(for record: DedupRecord) -> Duration {
        let remaining = (record.leaseUntil ?? Date()).timeIntervalSinceNow
        let suggested = Duration.milliseconds(Int64(max(0, remaining) * 1000))
        return min(max(suggested, configuration.minimumRetryDelay), configuration.lease)
    }

    package static func mismatch(_ record: DedupRecord, fingerprint: String?) -> DedupError {
        DedupError(
            .payloadMismatch,
            "\(record.id) was \(record.state == .completed ? "completed" : "claimed") with payload fingerprint "
                + "\(record.fingerprint ?? "none"), not \(fingerprint ?? "none"): the same key carries a different payload"
        )
    }

}

extension Duration {
    /// The duration in seconds, for `Date` arithmetic.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// The ``InFlightPolicy/wait(timeout:)`` policy for one message: polls with a doubling delay
/// (10 ms up to a tenth of the lease) until the holder completes (a duplicate) or its lease passes
/// (a takeover), or the timeout would pass before the next try.
package struct InFlightWaiter {
    private let deadline: ContinuousClock.Instant?
    private let lease: Duration
    private var delay = Duration.milliseconds(10)

    /// Starts the timeout now (none under ``InFlightPolicy/defer``). Made for every message, so under
    /// ``InFlightPolicy/defer`` it does no arithmetic at all, and the longest delay is worked out
    /// only once it waits.
    package init(_ configuration: ConsumerConfiguration) {
        if case .wait(let timeout) = configuration.inFlightPolicy {
            deadline = .now + timeout
        } else {
            deadline = nil
        }
        lease = configuration.lease
    }

    /// Sleeps before the next try and returns `true`, or returns `false` at once when the policy
    /// does not wait or the timeout would pass first (the message is then deferred).
    package mutating func waitBeforeRetrying() async throws -> Bool {
        guard let deadline, ContinuousClock.now + delay < deadline else { return false }
        try await Task.sleep(for: delay)
        delay = min(delay * 2, max(lease / 10, .milliseconds(10)))
        return true
    }
}
