import Dedup
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// A ``/Dedup/DedupStore`` in PostgreSQL, through the application's own postgres-nio
/// `PostgresClient`.
///
/// Many processes on many hosts may share the tables: every claim is one
/// `INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING` statement, every completion, release and
/// renewal one owner-checked statement, and a batch one statement over arrays (`unnest`), so each
/// is one round trip. "Now" is the server's clock (`statement_timestamp()`), never the caller's.
///
/// **The schema** is `Migrations/postgres/NNNN_name.sql` (tables `dedup_records` and
/// `dedup_schema_migrations` in ``Configuration/schema``), applied when the store is created, under
/// an advisory lock so processes starting together apply each migration once. A schema written by
/// a newer swift-dedup, or an applied migration that was changed, is refused.
///
/// **Durability** is the server's: a completion is committed when its statement returns, and is
/// kept as PostgreSQL keeps commits (`synchronous_commit`, replication).
///
/// For exactly-once effects in the same database, see
/// ``withTransactionalClaim(_:retention:_:)``.
public final class PostgresDedupStore: DedupStore {
    /// How the store uses its database.
    public struct Configuration: Sendable {
        /// The PostgreSQL schema holding the dedup tables; created if missing. Default `public`.
        public var schema: String
        /// How long a claim, and each statement of a transactional claim, waits for a row lock held by
        /// another transaction (a transactional claim of the same key) before failing with
        /// ``/Dedup/DedupError/Code/busy`` (`lock_timeout`). Default 5 s.
        public var lockTimeout: Duration
        /// How many times a transactional claim is run again after a serialization failure or a
        /// deadlock (SQLSTATE 40001, 40P01) before its error is thrown. Default 3.
        public var transactionRetries: Int
        /// The longest a call waits for a connection and the server's answer before it throws
        /// ``/Dedup/DedupError/Code/timeout`` (postgres-nio's pool itself keeps a request waiting while
        /// it retries connecting to a server that is down). Default 10 s.
        public var timeout: Duration
        /// Whether creating the store applies pending migrations (default `true`). When `false` it
        /// only checks the schema and writes nothing: a schema behind this library's is refused with
        /// ``/Dedup/DedupError/Code/schemaOutdated`` (for inspection tools, which never write a schema
        /// into someone's database).
        public var appliesMigrations: Bool

        /// Creates a configuration.
        public init(
            schema: String = "public",
            lockTimeout: Duration = .seconds(5),
            transactionRetries: Int = 3,
            timeout: Duration = .seconds(10),
            appliesMigrations: Bool = true
        ) {
            self.schema = schema
            self.lockTimeout = lockTimeout
            self.transactionRetries = transactionRetries
            self.timeout = timeout
            self.appliesMigrations = appliesMigrations
        }
    }

    /// The client the store sends its statements through.
    public let client: PostgresClient
    /// The configuration the store was created with.
    public let configuration: Configuration
    let names: TableNames
    let statements: RecordStatements
    let logger: Logger
    /// The task running ``client`` when the store created it from a URL; `nil` for the caller's client.
    private let ownedClientRun: Mutex<Task<Void, Never>?>
    /// Where the last purge call stopped walking the table, so the next one goes on from there.
    let purgeCursor = Mutex<RecordID?>(nil)

    /// Creates a store on the application's client (which the application runs, `client.run()`),
    /// applying pending migrations.
    ///
    /// - Throws: ``/Dedup/DedupError`` — ``/Dedup/DedupError/Code/storeUnavailable`` (server not reachable),
    ///   ``/Dedup/DedupError/Code/authenticationFailed``, ``/Dedup/DedupError/Code/schemaTooNew``,
    ///   ``/Dedup/DedupError/Code/schemaAltered``, ``/Dedup/DedupError/Code/invalidConfiguration``.
    ///
    /// `logger` is where the store logs (migrations applied); the task's `Logger.current` when `nil`.
    ///
    /// postgres-nio's pool does not say why it cannot connect: with the application's client, a
    /// refused password looks like a server that cannot be reached (``/Dedup/DedupError/Code/timeout``
    /// after ``Configuration/timeout``, or ``/Dedup/DedupError/Code/storeUnavailable``). Check the login
    /// at startup, or let the store make its client from a URL (``init(url:configuration:logger:)``),
    /// which reports ``/Dedup/DedupError/Code/authenticationFailed``.
    public convenience init(
        client: PostgresClient,
        configuration: Configuration = .init(),
        logger: Logger? = nil
    ) async throws {
        try self.init(client: client, configuration: configuration, logger: logger, ownedClientRun: nil)
        try await migrate()
    }

    /// Creates a store with a client of its own, from `postgres://user:password@host:port/database`
    /// (see ``PostgresURL``; its `schema` item, if any, replaces ``Configuration/schema``), and
    /// applies pending migrations. ``close()`` stops the client.
    ///
    /// It logs in once on a connection of its own first, so a refused password or an unreachable
    /// server is reported as what it is at once (a pool only says that it could not connect, after
    /// its retries).
    ///
    /// - Throws: as ``init(client:configuration:logger:)``, and
    ///   ``/Dedup/DedupError/Code/invalidConfiguration`` for a URL it cannot use.
    public convenience init(url: String, configuration: Configuration = .init(), logger: Logger? = nil) async throws {
        try await self.init(url: url, configuration: configuration, logger: logger, checkingSchema: true)
    }

    /// The schema state of the tables a URL points to, read without changing anything (the store
    /// is closed again).
    ///
    /// - Throws: as ``init(url:configuration:logger:)``, but never for the schema itself.
    public static func schemaStatus(
        url: String,
        configuration: Configuration = .init()
    ) async throws -> PostgresSchemaStatus {
        let store = try await PostgresDedupStore(
            url: url,
            configuration: configuration,
            logger: nil,
            checkingSchema: false
        )
        defer { store.close() }
        return try await store.schemaStatus()
    }

    /// A store from a URL, migrating or checking its schema unless `checkingSchema` is `false`
    /// (for reading the status of any schema, and for `dedup-inspect migrate`).
    package convenience init(
        url: String,
        configuration: Configuration,
        logger: Logger?,
        checkingSchema: Bool
    ) async throws {
        let parsed = try PostgresURL(url)
        var configuration = configuration
        if let schema = parsed.schema { configuration.schema = schema }
        try await Self.checkLogin(parsed, timeout: configuration.timeout, logger: logger ?? Logger.current)
        let client = PostgresClient(configuration: parsed.clientConfiguration)
        let run = Task { await client.run() }
        do {
            try self.init(client: client, configuration: configuration, logger: logger, ownedClientRun: run)
        } catch {
            run.cancel()
            throw error
        }
        do {
            if checkingSchema { try await migrate() }
        } catch {
            close()
            throw error
        }
    }

    private init(
        client: PostgresClient,
        configuration: Configuration,
        logger: Logger?,
        ownedClientRun: Task<Void, Never>?
    ) throws {
        guard configuration.lockTimeout > .zero else {
            throw DedupError(.invalidConfiguration, "the PostgreSQL lock timeout must be positive")
        }
        guard configuration.timeout > .zero else {
            throw DedupError(.invalidConfiguration, "the PostgreSQL call timeout must be positive")
        }
        guard configuration.transactionRetries >= 0 else {
            throw DedupError(.invalidConfiguration, "transactionRetries must not be negative")
        }
        self.client = client
        self.configuration = configuration
        self.logger = logger ?? Logger.current
        self.names = try TableNames(schema: configuration.schema)
        self.statements = RecordStatements(names)
        self.ownedClientRun = Mutex(ownedClientRun)
    }

    deinit {
        close()
    }

    /// Stops the client the store created from a URL; later calls throw
    /// ``/Dedup/DedupError/Code/storeUnavailable``. Does nothing to an application's client.
    public func close() {
        ownedClientRun.withLock { run in
            run?.cancel()
            run = nil
        }
    }

    /// Connects once with `url`'s settings and closes the connection again.
    private static func checkLogin(_ url: PostgresURL, timeout: Duration, logger: Logger) async throws {
        let configuration: PostgresConnection.Configuration
        do {
            configuration = try url.connectionConfiguration()
        } catch {
            throw DedupError(
                .invalidConfiguration,
                "cannot set up TLS for PostgreSQL: \(error)",
                underlyingError: error
            )
        }
        try await withTimeout(timeout, "connecting to PostgreSQL at \(url.host):\(url.port)") {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            try? await connection.close()
        }
    }

    // MARK: Schema

    private func migrate() async throws {
        guard configuration.appliesMigrations else {
            let status = try await schemaStatus()
            if let problem = status.problem { throw problem }
            if !status.pending.isEmpty {
                throw DedupError(
                    .schemaOutdated,
                    "the PostgreSQL dedup schema \(names.schema.debugDescription) has version \(status.currentVersion), not "
                        + "\(status.latestVersion) (pending: \(status.pending.map(\.description).joined(separator: ", "))), and "
                        + "this store was opened without migrating: migrate it first"
                )
            }
            return
        }
        _ = try await applyMigrations()
    }

    /// Applies the pending migrations (as creating a store does unless
    /// ``Configuration/appliesMigrations`` is `false`); returns those applied here.
    @discardableResult
    public func applyMigrations() async throws -> [PostgresMigration] {
        try await withConnection("applying migrations") { [names, logger] connection in
            try await PostgresMigrationRunner.migrate(connection, names, logger: logger)
        }
    }

    /// The schema state of the store's tables, read without changing anything.
    public func schemaStatus() async throws -> PostgresSchemaStatus {
        try await withConnection("reading the schema") { [names, logger] connection in
            try await PostgresMigrationRunner.status(connection, names, logger: logger)
        }
    }

    // MARK: Running statements

    /// Runs `query` on a pooled connection and collects its rows, within ``Configuration/timeout``;
    /// failures become ``/Dedup/DedupError``.
    func rows(_ query: PostgresQuery, _ context: String) async throws -> [PostgresRow] {
        try await Self.withTimeout(configuration.timeout, context) { [client, logger] in
            try await client.query(query, logger: logger).collect()
        }
    }

    /// Runs `body` on one pooled connection, within ``Configuration/timeout``; failures become
    /// ``/Dedup/DedupError``.
    func withConnection<R: Sendable>(
        _ context: String,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        try await Self.withTimeout(configuration.timeout, context) { [client] in
            try await client.withConnection { connection in try await body(connection) }
        }
    }

    /// Runs `body`, throwing ``/Dedup/DedupError/Code/timeout`` when it has not finished within
    /// `timeout`; its failures become ``/Dedup/DedupError``.
    ///
    /// The caller is answered at the deadline even when `body` is still waiting on the server:
    /// postgres-nio does not cancel a statement in flight, so `body` runs in a task of its own, is
    /// cancelled, and finishes (or not) in the background, its connection going back to the pool
    /// when the server answers. The statement's outcome is then unknown, as for any timeout. The
    /// extra task costs microseconds against a round trip of about a millisecond.
    static func withTimeout<R: Sendable>(
        _ timeout: Duration,
        _ context: String,
        _ body: @escaping @Sendable () async throws -> R
    ) async throws -> R {
        let race = DeadlineRace<R>()
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    race.start(continuation, body: body, timeout: timeout) {
                        DedupError(.timeout, "\(context): no answer from PostgreSQL within \(timeout)")
                    }
                }
            } onCancel: {
                race.finish(.failure(CancellationError()))
            }
        } catch {
            throw PostgresFailure.dedupError(error, context)
        }
    }

    static func leaseLost(_ lease: Lease, _ operation: String) -> DedupError {
        DedupError(
            .leaseLost,
            "cannot \(operation) \(lease.id): the lease with fencing token \(lease.fencingToken) is no longer current"
        )
    }

    // MARK: DedupStore

    /// Claims a key with one upsert statement.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try await claim(batch: [request])[0]
    }

    /// Claims all keys with one statement over arrays, answering as one-by-one claims in order would.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        if requests.isEmpty { return [] }
        for request in requests {
            try ClaimRequest.validate(ownerLabel: request.ownerLabel)
            try ClaimRequest.validate(brokerTime: request.brokerTime)
        }
        return try await ClaimBatch(requests, lockTimeout: configuration.lockTimeout).answers(sql: statements.claim) {
            query in
            try await self.rows(query, "claim")
        }
    }

    /// Completes with one owner-checked `UPDATE`.
    public func complete(_ completion: Completion) async throws {
        guard try await complete(batch: [completion])[0] == .completed else {
            throw Self.leaseLost(completion.lease, "complete")
        }
    }

    /// Completes all with one statement over arrays (a key that comes twice: in rounds, in order).
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        var answers = [CompletionAnswer](repeating: .leaseLost, count: completions.count)
        for round in Self.rounds(completions.map(\.lease.id)) {
            let bindings = CompletionBindings.make(round.map { completions[$0] })
            let rows = try await rows(PostgresQuery(unsafeSQL: statements.complete, binds: bindings), "complete")
            for row in rows {
                let position = Int(try row.decode(Int64.self)) - 1
                answers[round[position]] = .completed
            }
        }
        return answers
    }

    /// Deletes the in-flight record with one owner-checked `DELETE`.
    public func release(_ lease: Lease) async throws {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(ByteBuffer(utf8: lease.id.namespace))
        bindings.append(ByteBuffer(utf8: lease.id.key))
        bindings.append(ByteBuffer(utf8: lease.ownerToken))
        let rows = try await rows(PostgresQuery(unsafeSQL: statements.release, binds: bindings), "release")
        if rows.isEmpty { throw Self.leaseLost(lease, "release") }
    }

    /// Extends the lease with one owner-checked `UPDATE … RETURNING`.
    public func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        guard case .renewed(let renewed) = try await renew(batch: [lease], for: duration)[0] else {
            throw Self.leaseLost(lease, "renew")
        }
        return renewed
    }

    /// Extends all the leases with one statement over arrays (a key that comes twice: in rounds).
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        var answers = [RenewalAnswer](repeating: .leaseLost, count: leases.count)
        for round in Self.rounds(leases.map(\.id)) {
            var bindings = PostgresBindings(capacity: 4)
            let chosen = round.map { leases[$0] }
            bindings.appendBytes(chosen.map(\.id.namespace))
            bindings.appendBytes(chosen.map(\.id.key))
            bindings.appendBytes(chosen.map(\.ownerToken))
            bindings.append(duration.wholeMilliseconds)
            for row in try await rows(PostgresQuery(unsafeSQL: statements.renew, binds: bindings), "renew") {
                let (position, leaseUntil) = try row.decode((Int64, Int64).self)
                let index = round[Int(position) - 1]
                var renewed = leases[index]
                renewed.leaseUntil = Date(millisecondsSince1970: leaseUntil)
                answers[index] = .renewed(renewed)
            }
        }
        return answers
    }

    /// The positions of `ids` split into rounds in which no identity comes twice; the n-th
    /// occurrence of an identity is in round n, so running the rounds in order keeps each key's order.
    static func rounds(_ ids: [RecordID]) -> [[Int]] {
        var seen: [RecordID: Int] = [:]
        var rounds: [[Int]] = []
        for (index, id) in ids.enumerated() {
            let round = seen[id, default: 0]
            seen[id] = round + 1
            if round == rounds.count { rounds.append([]) }
            rounds[round].append(index)
        }
        return rounds
    }
}

/// One claim batch: the first occurrence of each key goes to the server in one statement; a key's
/// later occurrences are answered from the state the first left (as one-by-one claims would be).
struct ClaimBatch {
    let requests: [ClaimRequest]
    /// The claim statement's `lock_timeout`: how long it (and, in a transaction, what follows it)
    /// waits for a row another transaction holds.
    let lockTimeout: Duration

    init(_ requests: [ClaimRequest], lockTimeout: Duration) {
        self.requests = requests
        self.lockTimeout = lockTimeout
    }

    /// How often a key whose claim met a row changed after the statement's snapshot is tried again.
    static let attempts = 10

    /// Sends the claims through `send` (one statement of `sql`, or more when rows changed under
    /// it) and answers them in request order.
    func answers(sql: String, _ send: (PostgresQuery) async throws -> [PostgresRow]) async throws -> [ClaimAnswer] {
        var answers = [ClaimAnswer?](repeating: nil, count: requests.count)
        var first: [RecordID: Int] = [:]
        var repeats: [(index: Int, first: Int)] = []
        var pending: [Int] = []
        for (index, request) in requests.enumerated() {
            if let earlier = first[request.id] {
                repeats.append((index, earlier))
            } else {
                first[request.id] = index
                pending.append(index)
            }
        }
        // The record each first occurrence left, and the statement's now, for the repeats.
        var after: [Int: (StoredRecord, Int64)] = [:]
        var attempt = 0
        while !pending.isEmpty {
            attempt += 1
            let rows = try await send(PostgresQuery(unsafeSQL: sql, binds: bindings(pending)))
            var retry: [Int] = []
            for row in rows {
                let access = row.makeRandomAccess()
                let index = pending[Int(try access[0].decode(Int64.self)) - 1]
                let request = requests[index]
                let now = try access[1].decode(Int64.self)
                if let fencing = try access[2].decode(Int64?.self) {
                    let attempt = try access[3].decode(Int64.self)
                    let createdAt = try access[4].decode(Int64.self)
                    let leaseUntil = try access[5].decode(Int64.self)
                    let lease = Lease(
                        id: request.id,
                        ownerToken: request.ownerToken,
                        fencingToken: fencing,
                        attempt: Int(attempt),
                        leaseUntil: Date(millisecondsSince1970: leaseUntil),
                        isTakeover: attempt > 1,
                        claimedAt: Date(millisecondsSince1970: createdAt),
                        ownerLabel: request.ownerLabel
                    )
                    answers[index] = .acquired(lease)
                    let record = StoredRecord(
                        acquiredBy: request,
                        lease: lease,
                        createdAt: createdAt,
                        leaseUntil: leaseUntil,
                        expiresAt: try access[6].decode(Int64.self),
                        fingerprint: try access[7].decode(ByteBuffer?.self).map(String.init(buffer:)),
                        brokerTime: try access[8].decode(Int64?.self)
                    )
                    after[index] = (record, now)
                } else {
                    let stored = try StoredRecord(access, first: 9)
                    if let answer = StoredRecord.answerWithoutWrite(stored, request, now: now), let stored {
                        answers[index] = answer
                        after[index] = (stored, now)
                    } else {
                        // The row changed after the statement's snapshot (another claim committed
                        // between them): the snapshot cannot answer, the next statement will.
                        retry.append(index)
                    }
                }
            }
            if !retry.isEmpty && attempt >= Self.attempts {
                throw DedupError(
                    .storeError,
                    "claim: \(requests[retry[0]].id) kept changing under \(Self.attempts) claims in a row"
                )
            }
            pending = retry
        }
        for (index, firstIndex) in repeats {
            guard let (record, now) = after[firstIndex] else { continue }
            let request = requests[index]
            answers[index] =
                StoredRecord.answerWithoutWrite(record, request, now: now) ?? .inFlight(record.record(request.id))
        }
        return try answers.map { answer in
            guard let answer else { throw DedupError(.storeError, "claim: the server answered fewer rows than keys") }
            return answer
        }
    }

    private func bindings(_ indices: [Int]) -> PostgresBindings {
        let chosen = indices.map { requests[$0] }
        var bindings = PostgresBindings(capacity: 10)
        bindings.appendBytes(chosen.map(\.id.namespace))
        bindings.appendBytes(chosen.map(\.id.key))
        bindings.appendBytes(chosen.map(\.ownerToken))
        bindings.appendBytes(chosen.map(\.ownerLabel))
        bindings.append(chosen.map { $0.lease.wholeMilliseconds })
        bindings.append(chosen.map { $0.retention.wholeMilliseconds })
        bindings.appendBytes(chosen.map { $0.fingerprint ?? "" })
        bindings.append(chosen.map { $0.fingerprint != nil })
        bindings.append(chosen.map { $0.brokerMilliseconds ?? -1 })
        bindings.append(max(1, lockTimeout.wholeMilliseconds))
        return bindings
    }
}

/// The parameters of the completion statement (``RecordStatements/complete``).
enum CompletionBindings {
    static func make(_ completions: [Completion]) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        bindings.appendBytes(completions.map(\.lease.id.namespace))
        bindings.appendBytes(completions.map(\.lease.id.key))
        bindings.appendBytes(completions.map(\.lease.ownerToken))
        bindings.append(completions.map { $0.retention.wholeMilliseconds })
        bindings.append(completions.map { ByteBuffer(bytes: $0.result ?? Data()) })
        bindings.append(completions.map { $0.result != nil })
        return bindings
    }
}
