import Dedup
import Foundation
import Logging
import PostgresNIO

/// What a transactional claim on PostgreSQL did.
public enum PostgresTransactionalOutcome: Sendable, Hashable {
    /// The handler ran, and its writes and the completed record committed together.
    case committed(Lease, result: Data?)
    /// The key was already completed; the handler did not run and nothing was written.
    case duplicate(DedupRecord)
    /// A non-transactional consumer holds a live lease on the key; the handler did not run.
    case inFlight(DedupRecord)
    /// The key's record carries a different payload fingerprint; the handler did not run.
    case payloadMismatch(DedupRecord)
}

extension PostgresDedupStore {
    /// Claims a key, runs `body` on the same connection and completes the key, all in one
    /// transaction of a pooled connection, so the handler's own writes and the completed record
    /// commit together or not at all: exactly-once effects for data in the same database.
    ///
    /// - If the key is acquirable, `body` runs with the connection (inside the open transaction:
    ///   do not `COMMIT` or `ROLLBACK` on it) and the lease; its return value is kept as the
    ///   record's result for `retention`, and the transaction commits →
    ///   ``PostgresTransactionalOutcome/committed(_:result:)``. A failed commit means that nothing
    ///   happened.
    /// - If `body` throws, the transaction rolls back (no record, no effect) and its error is
    ///   rethrown as is, so a redelivery runs the handler again.
    /// - A serialization failure or a deadlock (SQLSTATE 40001, 40P01) rolls back and runs the whole
    ///   transaction, `body` included, again, up to ``Configuration/transactionRetries`` times.
    /// - Otherwise nothing is written and the answer says why (duplicate, in flight, mismatch).
    ///
    /// Every statement of the transaction waits at most ``Configuration/lockTimeout`` for a row
    /// lock (`lock_timeout`, which the claim statement sets for its transaction); past it the call
    /// throws ``/Dedup/DedupError/Code/busy``. Until the
    /// transaction commits, other claims of the key wait on its row (the claim is never visible as
    /// in flight), so keep `body` short. ``Configuration/timeout`` does not bound `body`.
    ///
    /// - Parameters:
    ///   - request: the key to claim.
    ///   - retention: how long the completed record is kept.
    ///   - body: the handler; writes through the connection, returns the result to store.
    /// - Throws: `body`'s error, or ``/Dedup/DedupError`` (``/Dedup/DedupError/Code/busy``,
    ///   ``/Dedup/DedupError/Code/storeError`` with the server's error as its cause after the
    ///   retries, and the other store failures), carrying the server's SQLSTATE as
    ///   ``/Dedup/DedupError/postgresSQLState`` when the server sent an error.
    public func withTransactionalClaim(
        _ request: ClaimRequest,
        retention: Duration,
        _ body: @escaping @Sendable (PostgresConnection, Lease) async throws -> Data?
    ) async throws -> PostgresTransactionalOutcome {
        try ClaimRequest.validate(ownerLabel: request.ownerLabel)
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await client.withConnection { [self] connection in
                    try await PostgresTransactionRunner.run(connection, logger: logger) { connection in
                        try await claimAndRun(on: connection, request, retention: retention, body)
                    }
                }
            } catch {
                let cause = (error as? HandlerFailure)?.error ?? error
                if attempt <= configuration.transactionRetries && Self.isRetryable(cause) {
                    logger.debug(
                        "transactional claim rolled back by the server; running it again",
                        metadata: [
                            "id": "\(request.id)", "attempt": "\(attempt)",
                            "sqlstate": "\(PostgresFailure.sqlState(of: cause) ?? "")",
                        ]
                    )
                    continue
                }
                // The handler's own errors as they are; the store's and the pool's as DedupErrors.
                throw error is HandlerFailure ? cause : PostgresFailure.dedupError(cause, "transactional claim")
            }
        }
    }

    /// Does the same as ``withTransactionalClaim(_:retention:_:)`` inside the caller's own open
    /// transaction on `connection` (after its `BEGIN`): the claim, `body` and the completion commit
    /// with the caller's transaction, or roll back with it.
    ///
    /// Everything the store does runs inside a savepoint: when the claim, `body` or the completion
    /// fails, the store rolls back to it and throws, and the caller's transaction stays usable (a
    /// failed statement never aborts it behind the caller's back). `lock_timeout` is set to
    /// ``Configuration/lockTimeout`` for the store's statements and `body` (by the claim statement),
    /// and put back afterwards.
    /// A serialization failure or deadlock is thrown, not retried: only the caller can run its
    /// transaction again.
    ///
    /// - Throws: `body`'s error, or ``/Dedup/DedupError``.
    public func withTransactionalClaim(
        _ request: ClaimRequest,
        retention: Duration,
        in connection: PostgresConnection,
        _ body: @escaping @Sendable (PostgresConnection, Lease) async throws -> Data?
    ) async throws -> PostgresTransactionalOutcome {
        try ClaimRequest.validate(ownerLabel: request.ownerLabel)
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        let previous: String
        do {
            try await connection.query("SAVEPOINT swift_dedup_claim", logger: logger)
            previous =
                try await connection.query("SELECT current_setting('lock_timeout')", logger: logger)
                .collect().first?.decode(String.self) ?? "0"
        } catch {
            throw PostgresFailure.dedupError(error, "transactional claim")
        }
        do {
            let outcome = try await claimAndRun(on: connection, request, retention: retention, body)
            try await connection.query("SELECT set_config('lock_timeout', \(previous), true)", logger: logger)
            try await connection.query("RELEASE SAVEPOINT swift_dedup_claim", logger: logger)
            return outcome
        } catch {
            // Rolling back to the savepoint also puts lock_timeout back.
            _ = try? await connection.query("ROLLBACK TO SAVEPOINT swift_dedup_claim", logger: logger)
            _ = try? await connection.query("RELEASE SAVEPOINT swift_dedup_claim", logger: logger)
            if let failure = error as? HandlerFailure { throw failure.error }
            throw PostgresFailure.dedupError(error, "transactional claim")
        }
    }

    /// Whether the server rolled the transaction back for a reason that running it again can cure.
    static func isRetryable(_ error: any Error) -> Bool {
        let state = PostgresFailure.sqlState(of: error)
        return state == SQLState.serializationFailure || state == SQLState.deadlockDetected
    }

    /// The claim (which sets `lock_timeout` for the rest of the transaction), `body` and the
    /// completion on a connection inside a transaction.
    private func claimAndRun(
        on connection: PostgresConnection,
        _ request: ClaimRequest,
        retention: Duration,
        _ body: @Sendable (PostgresConnection, Lease) async throws -> Data?
    ) async throws -> PostgresTransactionalOutcome {
        let batch = ClaimBatch([request], lockTimeout: configuration.lockTimeout)
        let answers = try await batch.answers(sql: statements.claim) { [logger] query in
            do {
                return try await connection.query(query, logger: logger).collect()
            } catch {
                throw PostgresFailure.dedupError(error, "transactional claim")
            }
        }
        let lease: Lease
        switch answers[0] {
        case .acquired(let acquired): lease = acquired
        case .duplicate(let record): return .duplicate(record)
        case .inFlight(let record): return .inFlight(record)
        case .payloadMismatch(let record): return .payloadMismatch(record)
        }
        let result: Data?
        do {
            result = try await body(connection, lease)
        } catch {
            throw HandlerFailure(error: error)
        }
        let completion = Completion(lease: lease, retention: retention, result: result)
        let completed: [PostgresRow]
        do {
            completed = try await connection.query(
                PostgresQuery(unsafeSQL: statements.complete, binds: CompletionBindings.make([completion])),
                logger: logger
            ).collect()
        } catch {
            throw PostgresFailure.dedupError(error, "transactional completion")
        }
        guard completed.count == 1 else {
            throw DedupError(.storeError, "the claimed record \(request.id) vanished inside its transaction")
        }
        return .committed(lease, result: result)
    }
}

/// An error the handler threw, told apart from the store's own on its way out of a transaction.
struct HandlerFailure: Error {
    let error: any Error
}
