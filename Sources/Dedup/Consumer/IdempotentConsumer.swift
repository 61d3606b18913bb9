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

    private let logger: Logger
    package let metrics: ConsumerMetrics
    private let keeper: LeaseKeeper?
    private let cache: LocalCache?
    /// ``ConsumerConfiguration/lease`` in nanoseconds, for the local deadlines of a batch's leases.
    private let leaseNanoseconds: Int64

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
        store: any DedupStore, namespace: String, configuration: ConsumerConfiguration = ConsumerConfiguration(),
        logger: Logger? = nil, metricsFactory: (any MetricsFactory)? = nil
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
        key: String?, fingerprint: String? = nil, brokerTime: Date? = nil,
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
        key: String?, fingerprint: String? = nil, brokerTime: Date? = nil, returning: Value.Type = Value.self,
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
        _ message: Message, keyStrategy: KeyStrategy<Message>, fingerprint: String? = nil, brokerTime: Date? = nil,
        _ handler: (Message, DedupContext) async throws -> Void
    ) async throws -> ProcessOutcome {
        try await process(key: keyStrategy.key(for: message), fingerprint: fingerprint, brokerTime: brokerTime) { context in
            try await handler(message, context)
        }
    }

    /// The whole single-message path; `handler` returns the bytes to store, if any.
    private func run(
        key: String?, fingerprint: String?, brokerTime: Date?, _ handler: (DedupContext) async throws -> Data?
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
                id: id, lease: configuration.lease, retention: configuration.retention, fingerprint: fingerprint,
                ownerLabel: configuration.ownerLabel, brokerTime: brokerTime
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
        _ lease: Lease, claimStarted: MonotonicInstant, _ handler: (DedupContext) async throws -> Data?
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
            throw DedupError(.leaseLost, "the lease on \(lease.id) was lost while the handler ran; its result is not recorded")
        }
        let stored = storable(result, id: lease.id)
        let completion = Completion(lease: current, retention: configuration.retention, result: stored)
        try await completeWithRetry(completion)
        if cache != nil {
            let now = Date()
            cache?.insert(
                DedupRecord(
                    id: lease.id, state: .completed, ownerToken: nil, fencingToken: lease.fencingToken,
                    attempt: lease.attempt, createdAt: now, leaseUntil: nil, completedAt: now,
                    expiresAt: now + configuration.retention.timeInterval, result: stored
                )
            )
        }
        return (.applied, stored)
    }

    private func runWithoutKey(_ handler: (DedupContext) async throws -> Data?) async throws -> (
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
        _ error: any Error, id: RecordID, _ handler: (DedupContext) async throws -> Data?
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

    // MARK: A batch

    /// Processes a batch of messages with one store call to claim them all and one to complete the
    /// ones whose handlers succeeded. Every key (and fingerprint) is computed first; handlers then
    /// run one after another: those of keyless messages under ``MissingKeyPolicy/bypass``, the
    /// claimed ones in the batch's order, and last, under ``InFlightPolicy/wait(timeout:)``, those
    /// of messages held elsewhere, each after its own wait.
    ///
    /// A key that comes more than once in the batch (a broker hands out a message and its
    /// redelivery in one read) is claimed and run once, for its first copy; each later copy gets
    /// ``ProcessOutcome/duplicate(_:)`` once the first is applied or found completed (or a payload
    /// mismatch if its fingerprint differs), the first's deferral when it is deferred, and the
    /// first's error when it fails, so no copy of a failed key is acked.
    ///
    /// - Returns: one result per message, in order: its outcome, or the error that kept it from
    ///   being acked (its handler's error, a lease lost, an invalid or missing key, a payload
    ///   mismatch, a completion that failed).
    /// - Throws: a store error from the batch claim under ``StoreFailurePolicy/failClosed``: no
    ///   message of the batch was processed.
    public func processBatch<Message>(
        _ messages: [Message], keyStrategy: KeyStrategy<Message>,
        fingerprint: ((Message) -> String?)? = nil, brokerTime: ((Message) -> Date?)? = nil,
        _ handler: (Message, DedupContext) async throws -> Void
    ) async throws -> [Result<ProcessOutcome, any Error>] {
        // Only the keys and fingerprints need the message type: the rest is not generic, so it is
        // compiled once rather than looking up generic metadata for every message.
        var keys: [String?] = []
        keys.reserveCapacity(messages.count)
        var fingerprints: [String?]? = fingerprint == nil ? nil : []
        fingerprints?.reserveCapacity(messages.count)
        var brokerTimes: [Date?]? = brokerTime == nil ? nil : []
        brokerTimes?.reserveCapacity(messages.count)
        for index in messages.indices {
            keys.append(keyStrategy.key(for: messages[index]))
            if let fingerprint { fingerprints?.append(fingerprint(messages[index])) }
            if let brokerTime { brokerTimes?.append(brokerTime(messages[index])) }
        }
        return try await processBatch(keys: keys, fingerprints: fingerprints, brokerTimes: brokerTimes) { index, context in
            try await handler(messages[index], context)
        }
    }

    /// ``processBatch(_:keyStrategy:fingerprint:brokerTime:_:)`` on the messages' keys and fingerprints; the
    /// handler gets a message's position.
    private func processBatch(
        keys: [String?], fingerprints: [String?]?, brokerTimes: [Date?]?, _ handler: (Int, DedupContext) async throws -> Void
    ) async throws -> [Result<ProcessOutcome, any Error>] {
        // Every message's result is set below; one left unset (a bug) comes out as an error, so its
        // message is not acked, rather than as an outcome.
        var results = [Result<ProcessOutcome, any Error>](repeating: .failure(Self.resultNotSet), count: keys.count)
        var requests: [ClaimRequest] = []
        var requestIndex: [Int] = []
        requests.reserveCapacity(keys.count)
        requestIndex.reserveCapacity(keys.count)
        // A key's later copies in the batch take the first copy's outcome (see laterCopyResult).
        // The store answers a later copy `.inFlight`, held by the first: only then are copies
        // looked for, so a batch without one pays nothing for it.
        var laterCopies: [(index: Int, position: Int)] = []
        var firstPositionOfID: [RecordID: Int]?
        func firstPosition(of position: Int) -> Int {
            if firstPositionOfID == nil {
                var positions = [RecordID: Int](minimumCapacity: requests.count)
                for earlier in requests.indices where positions[requests[earlier].id] == nil {
                    positions[requests[earlier].id] = earlier
                }
                firstPositionOfID = positions
            }
            return firstPositionOfID![requests[position].id] ?? position
        }
        for index in keys.indices {
            guard let key = keys[index] else {
                results[index] = await Self.capture {
                    try await runWithoutKey { context in
                        try await handler(index, context)
                        return nil
                    }.outcome
                }
                continue
            }
            let id: RecordID
            do {
                id = try RecordID(namespace: namespace, key: key, limits: configuration.identityLimits)
            } catch {
                results[index] = .failure(error)
                continue
            }
            if let cache, let record = cache.completedRecord(for: id) {
                metrics.cacheHits.increment()
                results[index] = .success(.duplicate(record))
                continue
            }
            requests.append(
                ClaimRequest(
                    id: id, lease: configuration.lease, retention: configuration.retention,
                    fingerprint: fingerprints?[index], ownerLabel: configuration.ownerLabel,
                    brokerTime: brokerTimes?[index]
                )
            )
            requestIndex.append(index)
        }

        let claimStarted = MonotonicInstant.now
        let answers: [ClaimAnswer]
        do {
            answers = requests.isEmpty ? [] : try await store.claim(batch: requests)
            metrics.claimDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: claimStarted))
        } catch {
            metrics.storeError(error)
            guard configuration.storeFailurePolicy == .failOpen, (error as? DedupError)?.isStoreUnreachable == true else {
                throw error
            }
            for position in requests.indices {
                let index = requestIndex[position]
                guard firstPosition(of: position) == position else {
                    results[index] = .success(.deferred(retryAfter: configuration.minimumRetryDelay))
                    continue
                }
                metrics.bypassed.increment()
                results[index] = await Self.capture {
                    try await handler(index, DedupContext(lease: nil, watch: nil))
                    return .bypassed(.storeUnavailable)
                }
            }
            return results
        }

        // Every acquired lease is watched (renewed) from the claim until the batch completion is
        // written, not just while its own handler runs: the later ones wait for the earlier handlers,
        // the earlier ones for the batch completion.
        var watches = [LeaseWatch?](repeating: nil, count: answers.count)
        var registration: Int?
        if let keeper {
            var acquired: [Lease] = []
            var positions: [Int] = []
            acquired.reserveCapacity(answers.count)
            positions.reserveCapacity(answers.count)
            for position in answers.indices {
                if case .acquired(let lease) = answers[position] {
                    acquired.append(lease)
                    positions.append(position)
                }
            }
            if !acquired.isEmpty {
                let (id, registered) = keeper.register(batch: acquired, claimStarted: claimStarted)
                registration = id
                for (position, watch) in zip(positions, registered) { watches[position] = watch }
            }
        }
        // Unregistered once the batch's completion is written (before any waiting on keys held
        // elsewhere), or on the way out of an error.
        defer {
            if let registration { keeper?.unregister(registration) }
        }
        let leaseDeadline = claimStarted.advanced(byNanoseconds: leaseNanoseconds)

        // Messages whose handler succeeded: their place in the results and among the answers.
        var succeeded: [(index: Int, position: Int)] = []
        succeeded.reserveCapacity(answers.count)
        // The leases of keys applied in this batch, by position, for their later copies' answers.
        var appliedLeases: [Int: Lease] = [:]
        var stillInFlight: [Int] = []
        // Indices, not elements: iterating would copy every answer first (the cases copy what they bind).
        for position in answers.indices {
            let index = requestIndex[position]
            switch answers[position] {
            case .duplicate(let record):
                metrics.duplicate.increment()
                cache?.insert(record)
                results[index] = .success(.duplicate(record))
            case .payloadMismatch(let record):
                metrics.payloadMismatch.increment()
                results[index] = .failure(Self.mismatch(record, fingerprint: requests[position].fingerprint))
            case .inFlight(let record):
                let first = firstPosition(of: position)
                if first != position, case .acquired = answers[first] {
                    laterCopies.append((index, first))
                    continue
                }
                countInFlight(record)
                if case .wait = configuration.inFlightPolicy {
                    stillInFlight.append(index)
                } else {
                    results[index] = .success(.deferred(retryAfter: retryAfter(for: record)))
                }
            case .acquired(let lease):
                countAcquired(lease)
                let watch = watches[position]
                // A lease that may have passed while earlier handlers ran can be held by someone else
                // now: the handler must not start.
                // (A watch counts its own loss.)
                let expired = watch?.isLost ?? (MonotonicInstant.now >= leaseDeadline)
                if expired {
                    if watch == nil { metrics.leaseLosses.increment() }
                    results[index] = .failure(
                        DedupError(.leaseLost, "the lease on \(lease.id) passed before its handler's turn in the batch")
                    )
                    continue
                }
                do {
                    try await handler(index, DedupContext(lease: watch?.currentLease ?? lease, watch: watch))
                } catch {
                    metrics.handlerFailures.increment()
                    if watch?.isLost != true {
                        await releaseAfterFailure(watch?.currentLease ?? lease, handlerError: error)
                    }
                    watch?.retire()
                    results[index] = .failure(error)
                    continue
                }
                succeeded.append((index, position))
            }
        }

        if !succeeded.isEmpty {
            // Complete with the newest lease of each (renewals change its end, not its owner). The
            // store's owner check decides: a lease that passed but was not taken over still completes,
            // as on the single-message path; one taken over answers leaseLost.
            let completions = succeeded.map { entry in
                Completion(
                    lease: watches[entry.position]?.currentLease ?? Self.acquiredLease(answers[entry.position]),
                    retention: configuration.retention, result: nil
                )
            }
            do {
                let completeStarted = MonotonicInstant.now
                let completionAnswers = try await completeBatchWithRetry(completions)
                metrics.completeDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: completeStarted))
                for (position, answer) in completionAnswers.enumerated() {
                    let index = succeeded[position].index
                    switch answer {
                    case .completed:
                        results[index] = .success(.applied)
                        if !laterCopies.isEmpty { appliedLeases[succeeded[position].position] = completions[position].lease }
                    case .leaseLost:
                        metrics.leaseLosses.increment()
                        results[index] = .failure(
                            DedupError(.leaseLost, "the lease on \(completions[position].lease.id) was lost before completion")
                        )
                    }
                }
            } catch {
                for entry in succeeded { results[entry.index] = .failure(error) }
            }
        }

        // The batch's leases are settled: stop renewing them before waiting on anything else.
        if let registration {
            keeper?.unregister(registration)
        }
        registration = nil

        // Messages in flight elsewhere under the wait policy: wait for each on its own.
        for index in stillInFlight {
            results[index] = await Self.capture {
                try await process(key: keys[index], fingerprint: fingerprints?[index], brokerTime: brokerTimes?[index]) { context in
                    try await handler(index, context)
                }
            }
        }
        for (index, position) in laterCopies {
            results[index] = await laterCopyResult(
                first: results[requestIndex[position]], request: requests[position],
                appliedLease: appliedLeases[position], fingerprint: fingerprints?[index]
            )
        }
        return results
    }

    /// The answer for a key's later copy in a batch, from its first copy's: a duplicate of what the
    /// first applied or found completed (or a payload mismatch, as its redelivery would get); deferred
    /// with a deferred first; the first's error otherwise, so neither copy is acked.
    private func laterCopyResult(
        first: Result<ProcessOutcome, any Error>, request: ClaimRequest, appliedLease: Lease?, fingerprint: String?
    ) async -> Result<ProcessOutcome, any Error> {
        let record: DedupRecord
        switch first {
        case .failure(let error):
            return .failure(error)
        case .success(.deferred(let retryAfter)):
            return .success(.deferred(retryAfter: retryAfter))
        case .success(.bypassed):
            return .success(.deferred(retryAfter: configuration.minimumRetryDelay))
        case .success(.duplicate(let completed)):
            record = completed
        case .success(.applied):
            if let lease = appliedLease {
                // Completed just now under this lease: its record as the store keeps it, but for the
                // completion time, which is the consumer's clock's.
                let now = Date()
                record = DedupRecord(
                    id: lease.id, state: .completed, ownerToken: nil, fencingToken: lease.fencingToken,
                    attempt: lease.attempt, createdAt: lease.claimedAt ?? now, leaseUntil: nil, completedAt: now,
                    expiresAt: now + configuration.retention.timeInterval, fingerprint: request.fingerprint,
                    brokerTime: request.brokerTime.map { Date(millisecondsSince1970: $0.millisecondsSince1970) }
                )
            } else {
                // Applied after waiting for another holder: the store has the record.
                do {
                    guard let stored = try await store.record(for: request.id) else {
                        return .success(.deferred(retryAfter: configuration.minimumRetryDelay))
                    }
                    record = stored
                } catch {
                    return .failure(error)
                }
            }
        }
        if let held = record.fingerprint, let offered = fingerprint, held != offered {
            metrics.payloadMismatch.increment()
            return .failure(Self.mismatch(record, fingerprint: fingerprint))
        }
        metrics.duplicate.increment()
        return .success(.duplicate(record))
    }

    // MARK: Helpers

    /// The placeholder of a batch result until the message's own is known.
    private static let resultNotSet = DedupError(.storeError, "internal error: no result was recorded for this message of the batch")

    /// The lease of an answer known to be `.acquired`.
    private static func acquiredLease(_ answer: ClaimAnswer) -> Lease {
        guard case .acquired(let lease) = answer else { preconditionFailure("not an acquired answer: \(answer)") }
        return lease
    }

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

    private func completeBatchWithRetry(_ completions: [Completion]) async throws -> [CompletionAnswer] {
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

    private func releaseAfterFailure(_ lease: Lease, handlerError: any Error) async {
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

    private static func capture<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
        do {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
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
