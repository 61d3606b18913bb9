import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// Transactional mode: the claim, the handler's writes on the same connection and the completion
/// commit together or not at all, against a real server.
@Suite("PostgreSQL transactional mode")
struct TransactionalTests {
    /// A store in a fresh schema with an `effects` table beside the dedup tables.
    static func storeWithEffects(
        _ configuration: PostgresDedupStore.Configuration = .forTests
    ) async throws -> PostgresDedupStore {
        let store = try await makeStore(configuration: configuration)
        try await TestDatabase.shared.server().psql(
            "CREATE TABLE \"\(store.configuration.schema)\".effects (key text PRIMARY KEY, applied integer NOT NULL)"
        )
        return store
    }

    static func effects(_ store: PostgresDedupStore) async throws -> String {
        try await TestDatabase.shared.server().psql(
            "SELECT coalesce(string_agg(key || '=' || applied, ',' ORDER BY key), '') FROM \"\(store.configuration.schema)\".effects"
        )
    }

    static func applyEffect(_ connection: PostgresConnection, _ store: PostgresDedupStore, _ key: String) async throws {
        try await connection.query(
            PostgresQuery(
                unsafeSQL:
                    "INSERT INTO \"\(store.configuration.schema)\".effects VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET applied = effects.applied + 1",
                binds: {
                    var b = PostgresBindings()
                    b.append(key)
                    return b
                }()
            ),
            logger: quietLogger
        )
    }

    /// A transactional claim of `id` (writing `effect` when given) whose handler waits for the
    /// returned continuation; returns once the handler runs, the key's row locked by its transaction.
    static func holdRow(
        of id: RecordID,
        in store: PostgresDedupStore,
        effect: String?
    ) async -> (holder: Task<PostgresTransactionalOutcome, any Error>, release: AsyncStream<Void>.Continuation) {
        let (holding, holdingContinuation) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            try await store.withTransactionalClaim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600)
            ) { connection, _ in
                if let effect { try await Self.applyEffect(connection, store, effect) }
                holdingContinuation.yield()
                for await _ in release { break }
                return nil
            }
        }
        for await _ in holding { break }
        return (holder, releaseContinuation)
    }

    @Test(
        "a committed claim writes the effect and the completed record together; the next delivery is a duplicate and runs nothing"
    )
    func commitsTogether() async throws {
        let store = try await Self.storeWithEffects()
        let id = makeID("order-1")
        let runs = Atomic<Int>(0)
        for _ in 0..<2 {
            let outcome = try await store.withTransactionalClaim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600)
            ) { connection, _ in
                runs.add(1, ordering: .relaxed)
                try await Self.applyEffect(connection, store, "order-1")
                return Data("receipt".utf8)
            }
            if runs.load(ordering: .relaxed) == 1, case .committed(let lease, let result) = outcome {
                #expect(lease.fencingToken == 1)
                #expect(result == Data("receipt".utf8))
            } else if case .duplicate(let record) = outcome {
                #expect(record.result == Data("receipt".utf8))
            } else {
                Issue.record("unexpected outcome \(outcome)")
            }
        }
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(try await Self.effects(store) == "order-1=1")
        #expect(try await store.record(for: id)?.state == .completed)
    }

    @Test("a handler that throws leaves neither the effect nor a record, and its own error comes out")
    func handlerErrorRollsBack() async throws {
        struct Refused: Error {}
        let store = try await Self.storeWithEffects()
        let id = makeID("order-2")
        await #expect(throws: Refused.self) {
            _ = try await store.withTransactionalClaim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600)
            ) { connection, _ in
                try await Self.applyEffect(connection, store, "order-2")
                throw Refused()
            }
        }
        #expect(try await Self.effects(store) == "")
        #expect(try await store.record(for: id) == nil)
    }

    @Test("a serialization failure rolls back and runs the transaction again; the effect is applied once")
    func retriesSerializationFailure() async throws {
        let store = try await Self.storeWithEffects()
        let runs = Atomic<Int>(0)
        let outcome = try await store.withTransactionalClaim(
            ClaimRequest(id: makeID("order-3"), lease: .seconds(30), retention: .seconds(3600)),
            retention: .seconds(3600)
        ) { connection, _ in
            try await Self.applyEffect(connection, store, "order-3")
            if runs.add(1, ordering: .relaxed).newValue == 1 {
                // The server's own error, as a serializable transaction meeting a conflict raises it.
                try await connection.query(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
                    logger: quietLogger
                )
            }
            return nil
        }
        guard case .committed = outcome else { throw ConformanceStyleFailure("expected committed, got \(outcome)") }
        #expect(runs.load(ordering: .relaxed) == 2)
        #expect(try await Self.effects(store) == "order-3=1")
    }

    @Test("deadlocks are retried a bounded number of times, then the error is thrown and nothing is written")
    func boundedRetries() async throws {
        let store = try await Self.storeWithEffects(.forTests(transactionRetries: 2))
        let runs = Atomic<Int>(0)
        let id = makeID("order-4")
        await #expect(throws: PSQLError.self) {
            _ = try await store.withTransactionalClaim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600)
            ) { connection, _ in
                runs.add(1, ordering: .relaxed)
                try await connection.query(
                    "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$",
                    logger: quietLogger
                )
                return nil
            }
        }
        #expect(runs.load(ordering: .relaxed) == 3)
        #expect(try await store.record(for: id) == nil)
    }

    @Test("a claim of a key another transaction is processing waits at most lock_timeout, then fails busy")
    func lockTimeoutReached() async throws {
        let store = try await Self.storeWithEffects(.forTests(lockTimeout: .milliseconds(200)))
        let id = makeID("order-5")
        let (holder, releaseContinuation) = await Self.holdRow(of: id, in: store, effect: "order-5")
        let started = ContinuousClock.now
        let error = await expectDedupError(.busy) {
            try await store.withTransactionalClaim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600)
            ) { _, _ in
                Issue.record("the second claim must not run its handler")
                return nil
            }
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(error?.underlyingError is PSQLError)
        #expect(error?.postgresSQLState == "55P03", "the server's lock_not_available")
        releaseContinuation.yield()
        guard case .committed = try await holder.value else {
            throw ConformanceStyleFailure("the holder did not commit")
        }
        #expect(try await Self.effects(store) == "order-5=1")
    }

    @Test("a plain claim of a key another transaction is processing waits at most lock_timeout, then fails busy")
    func plainClaimBehindTransactionFailsBusy() async throws {
        // lock_timeout, not the call timeout, must end the wait: busy, not timeout.
        let store = try await Self.storeWithEffects(.forTests(lockTimeout: .milliseconds(200)))
        let id = makeID("order-7")
        let (holder, releaseContinuation) = await Self.holdRow(of: id, in: store, effect: nil)
        let error = await expectDedupError(.busy) {
            try await store.claim(ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600)))
        }
        let cause = error?.underlyingError as? PSQLError
        #expect(cause?.serverInfo?[.sqlState] == "55P03", "the server's lock_not_available, not a cancelled call")
        #expect(error?.postgresSQLState == "55P03", "the SQLSTATE without digging into postgres-nio's error")
        releaseContinuation.yield()
        guard case .committed = try await holder.value else {
            throw ConformanceStyleFailure("the holder did not commit")
        }
        guard
            case .duplicate = try await store.claim(
                ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600))
            )
        else { throw ConformanceStyleFailure("expected a duplicate after the holder committed") }
    }

    @Test("the handler's statements run under the configured lock_timeout, which the claim sets for its transaction")
    func handlerRunsUnderLockTimeout() async throws {
        let store = try await Self.storeWithEffects(.forTests(lockTimeout: .milliseconds(1234)))
        let seen = Mutex<String?>(nil)
        _ = try await store.withTransactionalClaim(
            ClaimRequest(id: makeID("order-8"), lease: .seconds(30), retention: .seconds(3600)),
            retention: .seconds(3600)
        ) { connection, _ in
            let setting = try await Self.lockTimeout(on: connection)
            seen.withLock { $0 = setting }
            return nil
        }
        #expect(seen.withLock { $0 } == "1234ms")
    }

    @Test(
        "inside the caller's transaction: lock_timeout is the store's for the handler and the caller's again afterwards"
    )
    func callersLockTimeoutRestored() async throws {
        struct Refused: Error {}
        let store = try await Self.storeWithEffects(.forTests(lockTimeout: .milliseconds(1234)))
        let client = try await TestDatabase.shared.client()
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: quietLogger)
            try await connection.query("SET LOCAL lock_timeout = '777ms'", logger: quietLogger)
            let request = { (key: String) in
                ClaimRequest(id: makeID(key), lease: .seconds(30), retention: .seconds(3600))
            }
            let seen = Mutex<String?>(nil)
            let committed = try await store.withTransactionalClaim(
                request("kept"),
                retention: .seconds(3600),
                in: connection
            ) {
                connection,
                _ in
                let setting = try await Self.lockTimeout(on: connection)
                seen.withLock { $0 = setting }
                return nil
            }
            guard case .committed = committed else {
                throw ConformanceStyleFailure("expected committed, got \(committed)")
            }
            #expect(seen.withLock { $0 } == "1234ms")
            #expect(try await Self.lockTimeout(on: connection) == "777ms", "after a committed claim")
            let duplicate = try await store.withTransactionalClaim(
                request("kept"),
                retention: .seconds(3600),
                in: connection
            ) {
                _,
                _ in
                Issue.record("a duplicate must not run its handler")
                return nil
            }
            guard case .duplicate = duplicate else {
                throw ConformanceStyleFailure("expected a duplicate, got \(duplicate)")
            }
            #expect(try await Self.lockTimeout(on: connection) == "777ms", "after a duplicate")
            await #expect(throws: Refused.self) {
                _ = try await store.withTransactionalClaim(
                    request("failing"),
                    retention: .seconds(3600),
                    in: connection
                ) {
                    _,
                    _ in throw Refused()
                }
            }
            #expect(try await Self.lockTimeout(on: connection) == "777ms", "after a failing handler")
            try await connection.query("COMMIT", logger: quietLogger)
        }
    }

    static func lockTimeout(on connection: PostgresConnection) async throws -> String? {
        try await connection.query("SELECT current_setting('lock_timeout')", logger: quietLogger)
            .collect().first?.decode(String.self)
    }

    @Test(
        "inside the caller's transaction: a failing handler rolls back to the savepoint and leaves the caller's transaction usable"
    )
    func callersTransaction() async throws {
        struct Refused: Error {}
        let store = try await Self.storeWithEffects()
        let client = try await TestDatabase.shared.client()
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: quietLogger)
            await #expect(throws: Refused.self) {
                _ = try await store.withTransactionalClaim(
                    ClaimRequest(id: makeID("failing"), lease: .seconds(30), retention: .seconds(3600)),
                    retention: .seconds(3600),
                    in: connection
                ) { connection, _ in
                    try await Self.applyEffect(connection, store, "failing")
                    throw Refused()
                }
            }
            // The caller's transaction goes on: its own write and a second claim commit together.
            try await Self.applyEffect(connection, store, "callers-own")
            let outcome = try await store.withTransactionalClaim(
                ClaimRequest(id: makeID("working"), lease: .seconds(30), retention: .seconds(3600)),
                retention: .seconds(3600),
                in: connection
            ) { connection, _ in
                try await Self.applyEffect(connection, store, "working")
                return nil
            }
            guard case .committed = outcome else { throw ConformanceStyleFailure("expected committed, got \(outcome)") }
            #expect(try await store.record(for: makeID("working")) == nil, "not visible before the caller commits")
            try await connection.query("COMMIT", logger: quietLogger)
        }
        #expect(try await Self.effects(store) == "callers-own=1,working=1")
        #expect(try await store.record(for: makeID("working"))?.state == .completed)
        #expect(try await store.record(for: makeID("failing")) == nil)
    }

    @Test("processInTransaction on a consumer: applied once, then a duplicate")
    func consumerProcessInTransaction() async throws {
        let store = try await Self.storeWithEffects()
        let consumer = try IdempotentConsumer(store: store, namespace: "orders")
        let first = try await consumer.processInTransaction(key: "order-6") { connection, _ in
            try await Self.applyEffect(connection, store, "order-6")
        }
        let second = try await consumer.processInTransaction(key: "order-6") { connection, _ in
            try await Self.applyEffect(connection, store, "order-6")
        }
        #expect(first == .applied)
        guard case .duplicate = second else { throw ConformanceStyleFailure("expected a duplicate, got \(second)") }
        #expect(try await Self.effects(store) == "order-6=1")
    }
}

struct ConformanceStyleFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
