import Foundation

// MARK: A batch

extension IdempotentConsumer {
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
    /// - Parameters:
    ///   - messages: The batch, in the order its handlers run and its results come back.
    ///   - keyStrategy: Finds each message's dedup key.
    ///   - fingerprint: A digest of a message's payload, if the caller checks payloads (see
    ///     ``process(key:fingerprint:brokerTime:_:)``).
    ///   - brokerTime: When the broker took a message, if known (see
    ///     ``process(key:fingerprint:brokerTime:_:)``).
    ///   - handler: The side effect, run once per key as for a single message.
    /// - Returns: one result per message, in order: its outcome, or the error that kept it from
    ///   being acked (its handler's error, a lease lost, an invalid or missing key, a payload
    ///   mismatch, a completion that failed).
    /// - Throws: a store error from the batch claim under ``StoreFailurePolicy/failClosed``: no
    ///   message of the batch was processed.
    public func processBatch<Message>(
        _ messages: [Message],
        keyStrategy: KeyStrategy<Message>,
        fingerprint: ((Message) -> String?)? = nil,
        brokerTime: ((Message) -> Date?)? = nil,
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
        return try await processBatch(keys: keys, fingerprints: fingerprints, brokerTimes: brokerTimes) {
            index,
            context in
            try await handler(messages[index], context)
        }
    }

    /// ``processBatch(_:keyStrategy:fingerprint:brokerTime:_:)`` on the messages' keys and
    /// fingerprints; the handler gets a message's position. Each step is a method of its own, in
    /// the order they run.
    private func processBatch(
        keys: [String?],
        fingerprints: [String?]?,
        brokerTimes: [Date?]?,
        _ handler: BatchHandler
    ) async throws -> [Result<ProcessOutcome, any Error>] {
        var batch = BatchRun(keys: keys, fingerprints: fingerprints, brokerTimes: brokerTimes)
        await prepareClaims(&batch, handler)
        let claimStarted = MonotonicInstant.now
        let answers: [ClaimAnswer]
        do {
            answers = try await claim(batch, started: claimStarted)
        } catch {
            try await runBypassingStore(&batch, after: error, handler)
            return batch.results
        }
        var leases = watchAcquired(answers, claimStarted: claimStarted)
        // Unregistered once the batch's completion is written (before any waiting on keys held
        // elsewhere), or on the way out of an error.
        defer { leases.stopRenewing(keeper) }
        await runHandlers(
            &batch,
            answers,
            leases,
            leaseDeadline: claimStarted.advanced(byNanoseconds: leaseNanoseconds),
            handler
        )
        await completeSucceeded(&batch, answers, leases)
        // The batch's leases are settled: stop renewing them before waiting on anything else.
        leases.stopRenewing(keeper)
        await runHeldElsewhere(&batch, handler)
        await answerLaterCopies(&batch)
        return batch.results
    }

    /// A batch's handler: the message's position in the batch, and its context.
    private typealias BatchHandler = (Int, DedupContext) async throws -> Void

    /// Runs the handlers of keyless messages (under ``MissingKeyPolicy/bypass``), answers invalid
    /// keys and keys the local cache knows completed, and makes a claim for each other message.
    private func prepareClaims(_ batch: inout BatchRun, _ handler: BatchHandler) async {
        batch.requests.reserveCapacity(batch.keys.count)
        batch.requestIndex.reserveCapacity(batch.keys.count)
        for index in batch.keys.indices {
            guard let key = batch.keys[index] else {
                batch.results[index] = await Self.capture {
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
                batch.results[index] = .failure(error)
                continue
            }
            if let cache, let record = cache.completedRecord(for: id) {
                metrics.cacheHits.increment()
                batch.results[index] = .success(.duplicate(record))
                continue
            }
            batch.requests.append(
                ClaimRequest(
                    id: id,
                    lease: configuration.lease,
                    retention: configuration.retention,
                    fingerprint: batch.fingerprints?[index],
                    ownerLabel: configuration.ownerLabel,
                    brokerTime: batch.brokerTimes?[index]
                )
            )
            batch.requestIndex.append(index)
        }
    }

    /// Claims every key of the batch in one store call.
    private func claim(_ batch: BatchRun, started: MonotonicInstant) async throws -> [ClaimAnswer] {
        let answers = batch.requests.isEmpty ? [] : try await store.claim(batch: batch.requests)
        metrics.claimDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: started))
        return answers
    }

    /// After the batch claim failed: under ``StoreFailurePolicy/failOpen`` with the store
    /// unreachable, runs each key's handler without dedup (its later copies are deferred);
    /// otherwise rethrows the store's error, and no message of the batch was processed.
    private func runBypassingStore(
        _ batch: inout BatchRun,
        after error: any Error,
        _ handler: BatchHandler
    ) async throws {
        metrics.storeError(error)
        guard configuration.storeFailurePolicy == .failOpen, (error as? DedupError)?.isStoreUnreachable == true else {
            throw error
        }
        for position in batch.requests.indices {
            let index = batch.requestIndex[position]
            guard batch.firstPosition(of: position) == position else {
                batch.results[index] = .success(.deferred(retryAfter: configuration.minimumRetryDelay))
                continue
            }
            metrics.bypassed.increment()
            batch.results[index] = await Self.capture {
                try await handler(index, DedupContext(lease: nil, watch: nil))
                return .bypassed(.storeUnavailable)
            }
        }
    }

    /// Watches (renews) every acquired lease from the claim until the batch completion is written,
    /// not just while its own handler runs: the later ones wait for the earlier handlers, the
    /// earlier ones for the batch completion.
    private func watchAcquired(_ answers: [ClaimAnswer], claimStarted: MonotonicInstant) -> BatchLeases {
        var leases = BatchLeases(watches: [LeaseWatch?](repeating: nil, count: answers.count))
        guard let keeper else { return leases }
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
            let (registration, registered) = keeper.register(batch: acquired, claimStarted: claimStarted)
            leases.registration = registration
            for (position, watch) in zip(positions, registered) { leases.watches[position] = watch }
        }
        return leases
    }

    /// Settles each answer of the batch claim in order: a duplicate or a payload mismatch at once,
    /// a key held elsewhere deferred (or kept for ``runHeldElsewhere(_:_:)``), a later copy of a
    /// claimed key kept for ``answerLaterCopies(_:)``, and an acquired key by running its handler.
    private func runHandlers(
        _ batch: inout BatchRun,
        _ answers: [ClaimAnswer],
        _ leases: BatchLeases,
        leaseDeadline: MonotonicInstant,
        _ handler: BatchHandler
    ) async {
        batch.succeeded.reserveCapacity(answers.count)
        // Indices, not elements: iterating would copy every answer first (the cases copy what they bind).
        for position in answers.indices {
            let index = batch.requestIndex[position]
            switch answers[position] {
            case .duplicate(let record):
                metrics.duplicate.increment()
                cache?.insert(record)
                batch.results[index] = .success(.duplicate(record))
            case .payloadMismatch(let record):
                metrics.payloadMismatch.increment()
                batch.results[index] = .failure(
                    Self.mismatch(record, fingerprint: batch.requests[position].fingerprint)
                )
            case .inFlight(let record):
                let first = batch.firstPosition(of: position)
                if first != position, case .acquired = answers[first] {
                    batch.laterCopies.append((index, first))
                    continue
                }
                countInFlight(record)
                if case .wait = configuration.inFlightPolicy {
                    batch.stillInFlight.append(index)
                } else {
                    batch.results[index] = .success(.deferred(retryAfter: retryAfter(for: record)))
                }
            case .acquired(let lease):
                countAcquired(lease)
                if let failure = await runClaimed(
                    lease,
                    watch: leases.watches[position],
                    leaseDeadline: leaseDeadline,
                    { try await handler(index, $0) }
                ) {
                    batch.results[index] = .failure(failure)
                } else {
                    batch.succeeded.append((index, position))
                }
            }
        }
    }

    /// Runs the handler of one acquired key of the batch; returns the error that keeps its message
    /// from being completed, or `nil` when the handler succeeded.
    private func runClaimed(
        _ lease: Lease,
        watch: LeaseWatch?,
        leaseDeadline: MonotonicInstant,
        _ handler: (DedupContext) async throws -> Void
    ) async -> (any Error)? {
        // A lease that may have passed while earlier handlers ran can be held by someone else
        // now: the handler must not start.
        // (A watch counts its own loss.)
        let expired = watch?.isLost ?? (MonotonicInstant.now >= leaseDeadline)
        if expired {
            if watch == nil { metrics.leaseLosses.increment() }
            return DedupError(
                .leaseLost,
                "the lease on \(lease.id) passed before its handler's turn in the batch",
                underlyingError: watch?.renewalFailure
            )
        }
        do {
            try await handler(DedupContext(lease: watch?.currentLease ?? lease, watch: watch))
            return nil
        } catch {
            metrics.handlerFailures.increment()
            if watch?.isLost != true {
                await releaseAfterFailure(watch?.currentLease ?? lease, handlerError: error)
            }
            watch?.retire()
            return error
        }
    }

    /// Completes the messages whose handlers succeeded, in one store call.
    private func completeSucceeded(_ batch: inout BatchRun, _ answers: [ClaimAnswer], _ leases: BatchLeases) async {
        if batch.succeeded.isEmpty { return }
        // Complete with the newest lease of each (renewals change its end, not its owner). The
        // store's owner check decides: a lease that passed but was not taken over still completes,
        // as on the single-message path; one taken over answers leaseLost.
        let completions = batch.succeeded.map { entry in
            Completion(
                lease: leases.watches[entry.position]?.currentLease ?? Self.acquiredLease(answers[entry.position]),
                retention: configuration.retention,
                result: nil
            )
        }
        do {
            let completeStarted = MonotonicInstant.now
            let completionAnswers = try await completeBatchWithRetry(completions)
            metrics.completeDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: completeStarted))
            for (position, answer) in completionAnswers.enumerated() {
                let index = batch.succeeded[position].index
                switch answer {
                case .completed:
                    batch.results[index] = .success(.applied)
                    if !batch.laterCopies.isEmpty {
                        batch.appliedLeases[batch.succeeded[position].position] = completions[position].lease
                    }
                case .leaseLost:
                    metrics.leaseLosses.increment()
                    batch.results[index] = .failure(
                        DedupError(
                            .leaseLost,
                            "the lease on \(completions[position].lease.id) was lost before completion"
                        )
                    )
                }
            }
        } catch {
            for entry in batch.succeeded { batch.results[entry.index] = .failure(error) }
        }
    }

    /// Under ``InFlightPolicy/wait(timeout:)``: processes each message held elsewhere on its own,
    /// waiting for its holder as a single message would.
    private func runHeldElsewhere(_ batch: inout BatchRun, _ handler: BatchHandler) async {
        for index in batch.stillInFlight {
            let (key, fingerprint, brokerTime) = (
                batch.keys[index], batch.fingerprints?[index], batch.brokerTimes?[index]
            )
            batch.results[index] = await Self.capture {
                try await process(key: key, fingerprint: fingerprint, brokerTime: brokerTime) { context in
                    try await handler(index, context)
                }
            }
        }
    }

    /// Answers each later copy of a key from its first copy's result (see
    /// ``laterCopyResult(first:request:appliedLease:fingerprint:)``).
    private func answerLaterCopies(_ batch: inout BatchRun) async {
        for (index, position) in batch.laterCopies {
            batch.results[index] = await laterCopyResult(
                first: batch.results[batch.requestIndex[position]],
                request: batch.requests[position],
                appliedLease: batch.appliedLeases[position],
                fingerprint: batch.fingerprints?[index]
            )
        }
    }

    /// The answer for a key's later copy in a batch, from its first copy's: a duplicate of what the
    /// first applied or found completed (or a payload mismatch, as its redelivery would get); deferred
    /// with a deferred first; the first's error otherwise, so neither copy is acked.
    private func laterCopyResult(
        first: Result<ProcessOutcome, any Error>,
        request: ClaimRequest,
        appliedLease: Lease?,
        fingerprint: String?
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
                    id: lease.id,
                    state: .completed,
                    ownerToken: nil,
                    fencingToken: lease.fencingToken,
                    attempt: lease.attempt,
                    createdAt: lease.claimedAt ?? now,
                    leaseUntil: nil,
                    completedAt: now,
                    expiresAt: now + configuration.retention.timeInterval,
                    fingerprint: request.fingerprint,
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

    /// The lease of an answer known to be `.acquired`.
    private static func acquiredLease(_ answer: ClaimAnswer) -> Lease {
        guard case .acquired(let lease) = answer else { preconditionFailure("not an acquired answer: \(answer)") }
        return lease
    }

    /// `body`'s value, or its error as a failure.
    private static func capture<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
        do {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }
}

/// One batch on its way through ``IdempotentConsumer``'s batch steps: what each message asked for,
/// the claims made for them, and each message's result as it becomes known.
private struct BatchRun {
    let keys: [String?]
    let fingerprints: [String?]?
    let brokerTimes: [Date?]?
    /// One result per message. Every one is set by some step; one left unset (a bug) comes out as
    /// an error, so its message is not acked, rather than as an outcome.
    var results: [Result<ProcessOutcome, any Error>]
    /// The claims of the batch call, in order.
    var requests: [ClaimRequest] = []
    /// The message each claim is for.
    var requestIndex: [Int] = []
    /// A key's later copies in the batch, which take the first copy's outcome (see
    /// `laterCopyResult`): the message, and its first copy's claim. The store answers a later copy
    /// `.inFlight`, held by the first: only then are copies looked for, so a batch without one pays
    /// nothing for it.
    var laterCopies: [(index: Int, position: Int)] = []
    /// Each claimed record's first claim in the batch, worked out when first needed.
    private var firstPositionOfID: [RecordID: Int]?
    /// Messages whose handler succeeded: their place in the results and among the answers.
    var succeeded: [(index: Int, position: Int)] = []
    /// The leases of keys applied in this batch, by claim, for their later copies' answers.
    var appliedLeases: [Int: Lease] = [:]
    /// Messages held elsewhere, to wait for under ``InFlightPolicy/wait(timeout:)``.
    var stillInFlight: [Int] = []

    /// The placeholder of a batch result until the message's own is known.
    private static let resultNotSet = DedupError(
        .storeError,
        "internal error: no result was recorded for this message of the batch"
    )

    init(keys: [String?], fingerprints: [String?]?, brokerTimes: [Date?]?) {
        self.keys = keys
        self.fingerprints = fingerprints
        self.brokerTimes = brokerTimes
        results = [Result<ProcessOutcome, any Error>](repeating: .failure(Self.resultNotSet), count: keys.count)
    }

    /// The first claim in the batch of the record the claim at `position` is for.
    mutating func firstPosition(of position: Int) -> Int {
        if firstPositionOfID == nil {
            var positions = [RecordID: Int](minimumCapacity: requests.count)
            for earlier in requests.indices where positions[requests[earlier].id] == nil {
                positions[requests[earlier].id] = earlier
            }
            firstPositionOfID = positions
        }
        return firstPositionOfID![requests[position].id] ?? position
    }
}

/// The watches of a batch's acquired leases (by claim) and their registration with the lease
/// keeper.
private struct BatchLeases {
    var watches: [LeaseWatch?]
    var registration: Int?

    /// Ends the registration, if it has not ended yet.
    mutating func stopRenewing(_ keeper: LeaseKeeper?) {
        if let registration { keeper?.unregister(registration) }
        registration = nil
    }
}
