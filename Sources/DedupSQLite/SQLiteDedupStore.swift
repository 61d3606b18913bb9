import CSQLite
import Dedup
import Foundation
import Logging
import Synchronization

/// A ``/Dedup/DedupStore`` in an SQLite file, on the system `libsqlite3`.
///
/// Several store objects and several processes on one host may share the file: every claim is one
/// atomic statement or one `BEGIN IMMEDIATE` transaction, so two of them never both acquire a key.
///
/// **Where the work runs.** Claims, completions, releases, renewals and `record(for:)` finish in
/// microseconds, so they run inline on the calling task, on a connection guarded by a mutex and with
/// a busy timeout of zero. Only when another connection holds the write lock (`SQLITE_BUSY`) is the
/// call handed to the store's own worker thread, which retries it with
/// ``Configuration/busyTimeout``; Swift's cooperative threads never wait on a lock. Transactional
/// claims do the same: inline when the write lock is free, on the worker thread when it is held.
/// Inspection, purge and WAL checkpoints run on that worker thread.
///
/// **The schema** is `Migrations/sqlite/NNNN_name.sql` (tables `dedup_records` and
/// `dedup_schema_migrations`), applied at open. See ``schemaStatus(path:checkIntegrity:)`` and
/// ``migrate(path:configuration:logger:)``.
public final class SQLiteDedupStore: DedupStore {
    /// How the store opens and uses its file.
    public struct Configuration: Sendable {
        /// How long a write waits for another connection's lock before failing with
        /// ``/Dedup/DedupError/Code/busy`` (the wait happens on the store's worker thread). Default 5 s.
        public var busyTimeout: Duration
        /// How hard a commit pushes to disk. Default ``Synchronous/normal``.
        public var synchronous: Synchronous
        /// Where "now" comes from: the host's clock, or a manual clock in tests.
        public var clock: any DedupClock
        /// Checkpoint the write-ahead log on the worker thread instead of inside a commit, so no claim
        /// or completion pays for one. Default `true`.
        public var checkpointInBackground: Bool
        /// The write-ahead log size, in pages, at which a checkpoint is started. Default 1000 (about
        /// 4 MB), SQLite's own default.
        public var checkpointPages: Int
        /// Open for reading only, for inspection: records, pages and statistics are read as a
        /// writer committed them, and nothing is written, migrated or created, not even the
        /// write-ahead log's files beside the store (so a file or directory the reader cannot write
        /// is fine). The file must exist with a current schema (otherwise
        /// ``/Dedup/DedupError/Code/schemaOutdated``); every write throws ``/Dedup/DedupError/Code/readOnly``.
        /// Default `false`.
        public var readOnly: Bool

        /// Creates a configuration.
        public init(
            busyTimeout: Duration = .seconds(5),
            synchronous: Synchronous = .normal,
            clock: any DedupClock = SystemDedupClock(),
            checkpointInBackground: Bool = true,
            checkpointPages: Int = 1000,
            readOnly: Bool = false
        ) {
            self.busyTimeout = busyTimeout
            self.synchronous = synchronous
            self.clock = clock
            self.checkpointInBackground = checkpointInBackground
            self.checkpointPages = checkpointPages
            self.readOnly = readOnly
        }
    }

    /// SQLite's `PRAGMA synchronous` in WAL mode: what a committed claim or completion survives.
    public enum Synchronous: String, Sendable, Hashable, CaseIterable {
        /// No `fsync` at all. Survives a crash of the process; an OS crash or power loss may lose
        /// recent commits and can corrupt the file. For throwaway data only.
        case off
        /// `fsync` at checkpoints, not at each commit. Survives a crash of the process; an OS crash
        /// or power loss may lose the last commits (never corrupts the file). A lost completion
        /// means the message is handled again after its lease: at-least-once.
        case normal
        /// `fsync` of the log at every commit: a commit that returned survives power loss.
        case full
    }

    /// The database file.
    public let path: String
    /// Where the last purge call stopped walking the table, so the next one goes on from there.
    private let purgeCursor = Mutex<RecordID?>(nil)
    let configuration: Configuration
    let logger: Logger
    private let hot: Mutex<Connection?>
    private let worker: BlockingWorker
    /// What starts the write-ahead log's checkpoints, when they run in the background.
    let checkpoints: CheckpointTrigger?
    /// Whether transactional claims start inline (the file is in WAL mode), like single claims.
    let runsTransactionsInline: Bool
    /// How many inline calls met a busy lock and went to the worker thread (for tests and tuning).
    let busyHandoffs = Atomic<Int>(0)

    /// The error of calls after ``close()``.
    static let closedError = DedupError(.storeUnavailable, "the SQLite store is closed")

    /// Opens (creating if needed) the store at `path` and applies pending migrations.
    ///
    /// Opening may wait up to the busy timeout for another process that is migrating the same file.
    /// With ``Configuration/readOnly`` the file must exist and is opened for reading only, neither
    /// created nor migrated.
    ///
    /// - Throws: ``/Dedup/DedupError`` — ``/Dedup/DedupError/Code/storeUnavailable`` (missing directory, not
    ///   openable), ``/Dedup/DedupError/Code/permissionDenied``, ``/Dedup/DedupError/Code/readOnly``,
    ///   ``/Dedup/DedupError/Code/corruptStore`` (not an SQLite database), ``/Dedup/DedupError/Code/schemaTooNew``,
    ///   ``/Dedup/DedupError/Code/schemaAltered``, ``/Dedup/DedupError/Code/schemaOutdated`` (read-only, schema
    ///   behind), ``/Dedup/DedupError/Code/invalidConfiguration``. Nothing is written to a file that is refused.
    ///
    /// `logger` is where the store logs (migrations applied, a file not in WAL mode); the task's
    /// `Logger.current` when `nil`, as for ``/Dedup/IdempotentConsumer``. Errors are thrown, not logged.
    public init(path: String, configuration: Configuration = .init(), logger: Logger? = nil) throws {
        let logger = logger ?? Logger.current
        guard configuration.busyTimeout >= .zero else {
            throw DedupError(.invalidConfiguration, "the SQLite busy timeout must not be negative")
        }
        guard configuration.checkpointPages > 0 else {
            throw DedupError(.invalidConfiguration, "checkpointPages must be at least 1")
        }
        self.path = path
        self.configuration = configuration
        self.logger = logger
        let primary =
            configuration.readOnly
            ? try Self.openReadingOnly(path: path, configuration: configuration)
            : try Self.openMigratedRetryingBusy(path: path, configuration: configuration, logger: logger)
        let secondary: Connection
        do {
            secondary =
                configuration.readOnly
                ? try Self.openReadingOnly(path: path, configuration: configuration)
                : try Self.openConnection(path: path, configuration: configuration)
        } catch {
            primary.close()
            throw error
        }
        secondary.setBusyTimeout(configuration.busyTimeout)
        secondary.installTransactionGuard()
        self.worker = BlockingWorker(connection: secondary, name: "dedup-sqlite")
        // Inline calls never wait for a lock: a busy answer sends the call to the worker thread.
        primary.setBusyTimeout(.zero)
        primary.installTransactionGuard()
        // In WAL mode a transaction that has the write lock commits without waiting; otherwise
        // its commit may wait for readers, which an inline call must not do.
        self.runsTransactionsInline = (try? primary.texts("PRAGMA journal_mode")) == ["wal"]
        if configuration.checkpointInBackground && !configuration.readOnly {
            let trigger = CheckpointTrigger(
                worker: worker,
                pages: Int32(clamping: configuration.checkpointPages),
                busyTimeout: configuration.busyTimeout
            )
            trigger.install(on: primary)
            self.checkpoints = trigger
        } else {
            self.checkpoints = nil
        }
        self.hot = Mutex(primary)
    }

    deinit {
        close()
    }

    /// Closes the store's connections and stops its worker thread after the calls already queued
    /// there; later calls throw ``/Dedup/DedupError/Code/storeUnavailable``. Calling it again does nothing.
    public func close() {
        hot.withLock { connection in
            connection?.close()
            connection = nil
        }
        worker.stop()
    }

    // MARK: Opening

    static func openConnection(path: String, configuration: Configuration) throws(DedupError) -> Connection {
        let connection: Connection
        do {
            connection = try Connection(path: path)
        } catch {
            throw error.dedupError("opening the SQLite store", path: path)
        }
        // Before any statement: a file being created by another process is briefly locked, and
        // every statement, pragmas included, must wait for it rather than fail at once.
        connection.setBusyTimeout(configuration.busyTimeout)
        if sqlite3_db_readonly(connection.db, "main") == 1 {
            connection.close()
            throw DedupError(
                .readOnly,
                "the SQLite store \(path.debugDescription) can only be opened read-only (file or directory permissions, "
                    + "or a read-only file system): claims need to write"
            )
        }
        do {
            try connection.execute("PRAGMA synchronous = \(configuration.synchronous.rawValue.uppercased())")
        } catch {
            connection.close()
            throw error.dedupError("configuring the SQLite store", path: path)
        }
        return connection
    }

    /// Opens the main connection: checks the schema before writing anything, then switches to WAL
    /// and applies the pending migrations.
    /// ``openMigrated(path:configuration:logger:)``, tried again while another process that is
    /// creating or migrating the same file keeps it busy: some steps of opening (switching a new file
    /// to WAL, recovering its log) answer `SQLITE_BUSY` at once instead of waiting in the busy handler.
    static func openMigratedRetryingBusy(
        path: String,
        configuration: Configuration,
        logger: Logger
    ) throws -> Connection {
        let deadline = ContinuousClock.now + configuration.busyTimeout
        while true {
            do {
                return try openMigrated(path: path, configuration: configuration, logger: logger)
            } catch let error as DedupError where error.code == .busy && ContinuousClock.now < deadline {
                usleep(2_000)
            }
        }
    }

    static func openMigrated(path: String, configuration: Configuration, logger: Logger) throws -> Connection {
        let connection = try openConnection(path: path, configuration: configuration)
        do {
            connection.setBusyTimeout(configuration.busyTimeout)
            let applied = try MigrationRunner.mapped(path, "reading the schema") { () throws(SQLiteFailure) in
                try MigrationRunner.readApplied(connection)
            }
            try MigrationRunner.validate(applied, path: path)
            let mode = try MigrationRunner.mapped(path, "switching to WAL") { () throws(SQLiteFailure) in
                try connection.texts("PRAGMA journal_mode = WAL")
            }
            if mode != ["wal"] {
                logger.warning(
                    "SQLite store is not in WAL mode; concurrent readers will wait for writers",
                    metadata: ["path": "\(path)", "journal_mode": "\(mode.first ?? "?")"]
                )
            }
            _ = try MigrationRunner.migrate(connection, clock: configuration.clock, logger: logger)
            return connection
        } catch {
            connection.close()
            throw error
        }
    }

    /// Opens a connection that only reads (``Connection/openReadingOnly(_:)``), once the schema is
    /// found current and this library's: a store opened read-only is never migrated.
    static func openReadingOnly(path: String, configuration: Configuration) throws -> Connection {
        let connection: Connection
        do {
            connection = try Connection(path: path, readOnly: true)
        } catch {
            throw error.dedupError("opening the SQLite store", path: path)
        }
        do {
            connection.setBusyTimeout(configuration.busyTimeout)
            let status = try MigrationRunner.mapped(path, "reading the schema") { () throws(SQLiteFailure) in
                try MigrationRunner.status(connection, checkIntegrity: false)
            }
            if let problem = status.problem { throw problem }
            if !status.pending.isEmpty {
                throw DedupError(
                    .schemaOutdated,
                    "the SQLite store \(path.debugDescription) has schema version \(status.currentVersion), not \(status.latestVersion) "
                        + "(pending: \(status.pending.map(\.description).joined(separator: ", "))), and a store opened read-only "
                        + "is not migrated: open it for writing once, or migrate it, first"
                )
            }
            return connection
        } catch {
            connection.close()
            throw error
        }
    }

    // MARK: Schema, for operators

    /// The schema state of the store at `path`, read without changing anything (opened read-only;
    /// nothing is created or migrated).
    ///
    /// - Parameters:
    ///   - path: The SQLite file.
    ///   - checkIntegrity: also run `PRAGMA quick_check` (reads the whole file).
    /// - Throws: ``/Dedup/DedupError/Code/storeUnavailable`` when the file does not exist,
    ///   ``/Dedup/DedupError/Code/corruptStore`` when it is not an SQLite database, and the other open errors.
    public static func schemaStatus(path: String, checkIntegrity: Bool = true) throws -> SQLiteSchemaStatus {
        let connection: Connection
        do {
            connection = try Connection(path: path, readOnly: true, create: false)
        } catch {
            throw error.dedupError("opening the SQLite store", path: path)
        }
        defer { connection.close() }
        connection.setBusyTimeout(.seconds(5))
        return try MigrationRunner.mapped(path, "reading the schema") { () throws(SQLiteFailure) in
            try MigrationRunner.status(connection, checkIntegrity: checkIntegrity)
        }
    }

    /// Creates the store at `path` if needed and applies the pending migrations; returns those it
    /// applied (empty when the schema was up to date).
    ///
    /// - Throws: as ``init(path:configuration:logger:)``.
    @discardableResult
    public static func migrate(
        path: String,
        configuration: Configuration = .init(),
        logger: Logger? = nil
    ) throws -> [SQLiteMigration] {
        let logger = logger ?? Logger.current
        let connection = try openConnection(path: path, configuration: configuration)
        defer { connection.close() }
        connection.setBusyTimeout(configuration.busyTimeout)
        let applied = try MigrationRunner.mapped(path, "reading the schema") { () throws(SQLiteFailure) in
            try MigrationRunner.readApplied(connection)
        }
        try MigrationRunner.validate(applied, path: path)
        _ = try MigrationRunner.mapped(path, "switching to WAL") { () throws(SQLiteFailure) in
            try connection.texts("PRAGMA journal_mode = WAL")
        }
        return try MigrationRunner.migrate(connection, clock: configuration.clock, logger: logger)
    }

    // MARK: Running statements

    /// Runs `body` inline on the hot connection; if it meets another connection's lock, runs it
    /// again on the worker thread, which waits with the busy timeout.
    @inline(__always)
    func perform<R: Sendable>(_ context: String, _ body: @escaping @Sendable (Connection) throws -> R) async throws -> R
    {
        let inline: Result<R, any Error>? = hot.withLock { connection -> Result<R, any Error>? in
            guard let connection else { return .failure(Self.closedError) }
            do {
                return .success(try body(connection))
            } catch let failure as SQLiteFailure where failure.isBusy {
                connection.rollbackIfNeeded()
                return nil
            } catch {
                connection.rollbackIfNeeded()
                return .failure(error)
            }
        }
        switch inline {
        case .success(let value)?:
            return value
        case .failure(let error)?:
            throw mapped(error, context)
        case nil:
            busyHandoffs.add(1, ordering: .relaxed)
            logger.trace("SQLite lock busy; retrying on the worker thread", metadata: ["operation": "\(context)"])
            return try await onWorker(context, body)
        }
    }

    /// Runs `body` on the worker thread (its connection waits for locks up to the busy timeout).
    func onWorker<R: Sendable>(
        _ context: String,
        _ body: @escaping @Sendable (Connection) throws -> R
    ) async throws -> R {
        do {
            return try await worker.run { connection in
                do {
                    return try body(connection)
                } catch {
                    connection.rollbackIfNeeded()
                    throw error
                }
            }
        } catch {
            throw mapped(error, context)
        }
    }

    func mapped(_ error: any Error, _ context: String) -> any Error {
        if let failure = error as? SQLiteFailure { return failure.dedupError(context, path: path) }
        return error
    }

    private var now: Int64 { configuration.clock.nowMilliseconds() }

    // MARK: DedupStore

    /// Claims a key: one read, and one atomic upsert only when the key may be acquired, so a
    /// duplicate or in-flight answer costs no write transaction.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try ClaimRequest.validate(ownerLabel: request.ownerLabel)
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        let clock = configuration.clock
        return try await perform("claim") { connection in
            try RecordSQL.claim(connection, request, now: clock.nowMilliseconds())
        }
    }

    /// Claims all keys in one `BEGIN IMMEDIATE` transaction, in order.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        if requests.isEmpty { return [] }
        for request in requests {
            try ClaimRequest.validate(ownerLabel: request.ownerLabel)
            try ClaimRequest.validate(brokerTime: request.brokerTime)
        }
        let clock = configuration.clock
        return try await perform("batch claim") { connection in
            try RecordSQL.claim(connection, batch: requests, now: clock.nowMilliseconds())
        }
    }

    /// Completes with one owner-checked `UPDATE`.
    public func complete(_ completion: Completion) async throws {
        let clock = configuration.clock
        let done = try await perform("complete") { connection in
            try RecordSQL.complete(connection, completion, now: clock.nowMilliseconds())
        }
        if !done { throw Self.leaseLost(completion.lease, "complete") }
    }

    /// Completes all in one transaction, in order.
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        if completions.isEmpty { return [] }
        let clock = configuration.clock
        return try await perform("batch complete") { connection in
            let now = clock.nowMilliseconds()
            return try RecordSQL.transaction(connection) { () throws(SQLiteFailure) in
                var answers: [CompletionAnswer] = []
                answers.reserveCapacity(completions.count)
                for completion in completions {
                    answers.append(try RecordSQL.complete(connection, completion, now: now) ? .completed : .leaseLost)
                }
                return answers
            }
        }
    }

    /// Deletes the in-flight record with one owner-checked `DELETE`.
    public func release(_ lease: Lease) async throws {
        let clock = configuration.clock
        let done = try await perform("release") { connection in
            try RecordSQL.release(connection, lease, now: clock.nowMilliseconds())
        }
        if !done { throw Self.leaseLost(lease, "release") }
    }

    /// Extends the lease with one owner-checked `UPDATE … RETURNING`.
    public func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        let clock = configuration.clock
        let renewed = try await perform("renew") { connection in
            try RecordSQL.renew(connection, lease, for: duration, now: clock.nowMilliseconds())
        }
        guard let renewed else { throw Self.leaseLost(lease, "renew") }
        return renewed
    }

    /// Extends all the leases in one transaction, in order.
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        if leases.isEmpty { return [] }
        let clock = configuration.clock
        return try await perform("batch renew") { connection in
            let now = clock.nowMilliseconds()
            return try RecordSQL.transaction(connection) { () throws(SQLiteFailure) in
                var answers: [RenewalAnswer] = []
                answers.reserveCapacity(leases.count)
                for lease in leases {
                    let renewed = try RecordSQL.renew(connection, lease, for: duration, now: now)
                    answers.append(renewed.map(RenewalAnswer.renewed) ?? .leaseLost)
                }
                return answers
            }
        }
    }

    static func leaseLost(_ lease: Lease, _ operation: String) -> DedupError {
        DedupError(
            .leaseLost,
            "cannot \(operation) \(lease.id): the lease with fencing token \(lease.fencingToken) is no longer current"
        )
    }

    /// The live record of `id`, read inline.
    public func record(for id: RecordID) async throws -> DedupRecord? {
        let clock = configuration.clock
        return try await perform("read") { connection in
            let now = clock.nowMilliseconds()
            guard let stored = try RecordSQL.read(connection, id), stored.expiresAt > now else { return nil }
            return stored.record(id)
        }
    }

    /// A page in (namespace, key) byte order; runs on the worker thread.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage
    {
        guard limit > 0 else { return RecordPage(records: [], next: nil) }
        var after: RecordID?
        if let cursor {
            guard let id = RecordID(encoded: Substring(cursor.token)) else {
                throw DedupError(
                    .invalidConfiguration,
                    "the page cursor \(cursor.token.debugDescription) was not made by this store"
                )
            }
            after = id
        }
        let clock = configuration.clock
        return try await onWorker("list") { [after] connection in
            try RecordSQL.page(connection, filter, after: after, limit: limit, now: clock.nowMilliseconds())
        }
    }

    /// Deletes in one transaction on the worker thread; each `DELETE` re-checks the filter.
    public func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        if ids.isEmpty { return 0 }
        let clock = configuration.clock
        return try await onWorker("delete") { connection in
            try RecordSQL.delete(connection, ids, matching: filter, now: clock.nowMilliseconds())
        }
    }

    /// Deletes up to `limit` expired records in one transaction on the worker thread, walking the
    /// primary key on from where the previous call stopped (there is no expiry index for the hot
    /// path to maintain); a call that deletes fewer than `limit` has reached the end of the table.
    public func purgeExpired(limit: Int) async throws -> Int {
        guard limit > 0 else { return 0 }
        let clock = configuration.clock
        return try await onWorker("purge") { [self] connection in
            let (deleted, next) = try RecordSQL.purge(
                connection,
                limit: limit,
                after: purgeCursor.withLock { $0 },
                now: clock.nowMilliseconds()
            )
            purgeCursor.withLock { $0 = next }
            return deleted
        }
    }

    /// Counts live records by namespace on the worker thread (one scan).
    public func stats() async throws -> DedupStats {
        let clock = configuration.clock
        return try await onWorker("stats") { connection in
            try RecordSQL.stats(connection, now: clock.nowMilliseconds())
        }
    }

    /// How many records are past their expiry but not deleted yet (what ``purgeExpired(limit:)``
    /// would delete), by namespace; runs on the worker thread, read-only stores included.
    public func expiredCounts() async throws -> [String: Int] {
        let clock = configuration.clock
        return try await onWorker("count expired") { connection in
            try RecordSQL.expiredCounts(connection, now: clock.nowMilliseconds())
        }
    }

    /// Checkpoints the write-ahead log now (on the worker thread), as much as readers allow.
    /// The store does this by itself; operators may call it before copying the file.
    public func checkpoint() async throws {
        try await onWorker("checkpoint") { connection in
            let rc = sqlite3_wal_checkpoint_v2(connection.db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            if rc != SQLITE_OK { throw connection.failure(rc) }
        }
    }
}
