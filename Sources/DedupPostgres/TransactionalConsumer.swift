import Dedup
import Foundation
import PostgresNIO

extension IdempotentConsumer {
    /// Processes one message in the PostgreSQL store's transactional mode: the claim, `body`'s
    /// writes through the connection and the completion commit together in one transaction, or
    /// not at all. A crash anywhere inside leaves nothing behind, so the effect is exactly once.
    ///
    /// `body` runs inside the open transaction (see
    /// ``PostgresDedupStore/withTransactionalClaim(_:retention:_:)``: `lock_timeout`, retries of
    /// serialization failures and deadlocks, which run `body` again). There is no lease renewal
    /// (no other consumer sees the claim before it commits) and no fail-open: the effect lives in
    /// the store, so without the store there is nothing to run.
    ///
    /// `brokerTime` is kept on the record as in ``/Dedup/IdempotentConsumer/process(key:fingerprint:brokerTime:_:)``.
    ///
    /// - Returns: ``/Dedup/ProcessOutcome/applied``, ``/Dedup/ProcessOutcome/duplicate(_:)``, or
    ///   ``/Dedup/ProcessOutcome/deferred(retryAfter:)`` when a non-transactional consumer holds a live
    ///   lease on the key (under the ``/Dedup/InFlightPolicy/wait(timeout:)`` policy, only once the
    ///   timeout has passed without the holder completing or its lease passing).
    /// - Throws: `body`'s error (nothing was written), `CancellationError` when the task is cancelled
    ///   while waiting under the wait policy, ``/Dedup/DedupError/Code/missingKey``,
    ///   ``/Dedup/DedupError/Code/payloadMismatch``, ``/Dedup/DedupError/Code/invalidConfiguration`` when the
    ///   consumer's store is not a ``PostgresDedupStore``, or the store's error.
    public func processInTransaction(
        key: String?,
        fingerprint: String? = nil,
        brokerTime: Date? = nil,
        _ body: @escaping @Sendable (PostgresConnection, DedupContext) async throws -> Void
    ) async throws -> ProcessOutcome {
        guard let postgres = store as? PostgresDedupStore else {
            throw DedupError(
                .invalidConfiguration,
                "transactional mode on PostgreSQL needs a PostgresDedupStore; this consumer's store is \(type(of: store))"
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
            let outcome: PostgresTransactionalOutcome
            do {
                outcome = try await postgres.withTransactionalClaim(request, retention: configuration.retention) {
                    connection,
                    lease in
                    try await body(connection, DedupContext(lease: lease))
                    return nil
                }
            } catch let error as DedupError where error.isStoreFailure {
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
