import Dedup
import Foundation

extension SQLiteDedupStore {
    /// Runs `body` in one write transaction on the store's worker thread: for the application's own
    /// tables in the dedup file (creating them, reading them), outside any claim.
    ///
    /// - Throws: `body`'s error (everything it wrote is rolled back), or a ``/Dedup/DedupError``:
    ///   ``/Dedup/DedupError/Code/handlerStatementFailed`` for a statement of `body`'s that failed
    ///   because of the statement or its data (see ``SQLiteTransaction/execute(_:_:)-(_,[SQLiteValue])``),
    ///   or the store's failure.
    public func withTransaction<Value: Sendable>(
        _ body: @escaping @Sendable (SQLiteTransaction) throws -> Value
    ) async throws -> Value {
        try await onWorker("transaction") { connection in
            try connection.run(.begin)
            let value = try Self.runHandler(connection, body)
            try connection.run(.commit)
            return value
        }
    }
}

extension IdempotentConsumer {
    /// Processes one message in the SQLite store's transactional mode: the claim, `body`'s writes to
    /// the application's own tables, and the completion commit together in one transaction, or not
    /// at all. A crash anywhere inside leaves nothing behind, so the effect is exactly once.
    ///
    /// `body` runs while the database's write lock is held, on the calling task when the lock was
    /// free and on the store's worker thread when the transaction had to wait for it (see
    /// ``SQLiteDedupStore/withTransactionalClaim(_:retention:_:)``): keep it to SQL through the
    /// ``SQLiteTransaction`` and do no waiting in it. There is no lease renewal (no
    /// other consumer can see the claim before it commits) and no fail-open: the effect lives in the
    /// store, so without the store there is nothing to run.
    ///
    /// `brokerTime` is kept on the record as in ``/Dedup/IdempotentConsumer/process(key:fingerprint:brokerTime:_:)``.
    ///
    /// - Returns: ``/Dedup/ProcessOutcome/applied``, ``/Dedup/ProcessOutcome/duplicate(_:)``, or
    ///   ``/Dedup/ProcessOutcome/deferred(retryAfter:)`` when a non-transactional consumer holds a live
    ///   lease on the key (under the ``/Dedup/InFlightPolicy/wait(timeout:)`` policy, only once the
    ///   timeout has passed without the holder completing or its lease passing).
    /// When `body` throws, nothing is written: its writes and the claim roll back together, so the
    /// key is free for the redelivery, which runs `body` again. What the error is decides how it
    /// is counted, as ``/Dedup/DedupError/isStoreFailure`` tells:
    /// - `body`'s own error, and ``/Dedup/DedupError/Code/handlerStatementFailed`` from one of its
    ///   statements that failed because of the statement or its data (a constraint, a datatype
    ///   mismatch, an SQL error, transaction control): a handler failure (`dedup.handler.failures`),
    ///   which a stream consumer counts toward its dead-letter limit, since it fails the same way
    ///   on every delivery;
    /// - a store failure, met by the claim, the commit or one of `body`'s statements (busy, a full
    ///   disk, an I/O error): a store error (`dedup.store.errors`), which a stream consumer does not
    ///   count.
    ///
    /// - Throws: `body`'s error, ``/Dedup/DedupError/Code/handlerStatementFailed`` (see above),
    ///   `CancellationError` when the task is cancelled while waiting under the wait policy,
    ///   ``/Dedup/DedupError/Code/missingKey``, ``/Dedup/DedupError/Code/payloadMismatch``,
    ///   ``/Dedup/DedupError/Code/invalidConfiguration`` when the consumer's store is not a
    ///   ``SQLiteDedupStore``, or the store's error.
    public func processInTransaction(
        key: String?,
        fingerprint: String? = nil,
        brokerTime: Date? = nil,
        _ body: @escaping @Sendable (SQLiteTransaction, DedupContext) throws -> Void
    ) async throws -> ProcessOutcome {
        guard let sqlite = store as? SQLiteDedupStore else {
            throw DedupError(
                .invalidConfiguration,
                "transactional mode needs a SQLiteDedupStore; this consumer's store is \(type(of: store))"
            )
        }
        guard let key, !key.isEmpty else {
            throw DedupError(.missingKey, "the message has no dedup key; transactional mode cannot bypass dedup")
        }
        let id = try RecordID(namespace: namespace, key: key, limits: configuration.identityLimits)
        let request = ClaimRequest(
            id: id,
            lease: configuration.lease,
            retention: configuration.retention,
            fingerprint: fingerprint,
            ownerLabel: configuration.ownerLabel,
            brokerTime: brokerTime
        )
        var waiter = InFlightWaiter(configuration)
        while true {
            let started = MonotonicInstant.now
            let outcome: TransactionalOutcome
            do {
                outcome = try await sqlite.withTransactionalClaim(request, retention: configuration.retention) {
                    transaction,
                    lease in
                    try body(transaction, DedupContext(lease: lease))
                    return nil
                }
            } catch let error as DedupError where error.isStoreFailure {
                // A failed statement of the body's own (handlerStatementFailed) is no store failure:
                // counted below, as the body's.
                metrics.storeError(error)
                throw error
            } catch {
                metrics.handlerFailures.increment()
                throw error
            }
            metrics.claimDuration.recordNanoseconds(MonotonicInstant.now.nanoseconds(since: started))
            switch outcome {
            case .committed(let lease, _):
                countAcquired(lease)
                return .applied
            case .duplicate(let record):
                metrics.duplicate.increment()
                return .duplicate(record)
            case .inFlight(let record):
                countInFlight(record)
                if try await waiter.waitBeforeRetrying() { continue }
                return .deferred(retryAfter: retryAfter(for: record))
            case .payloadMismatch(let record):
                metrics.payloadMismatch.increment()
                throw Self.mismatch(record, fingerprint: fingerprint)
            }
        }
    }
}
