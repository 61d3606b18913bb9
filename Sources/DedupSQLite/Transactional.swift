import CSQLite
import Dedup
import Foundation

/// A value to bind to, or read from, an SQL statement.
public enum SQLiteValue: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByNilLiteral
{
    /// SQL `NULL`.
    case null
    /// A 64-bit integer.
    case integer(Int64)
    /// A double.
    case real(Double)
    /// UTF-8 text (bound with its byte length: NUL is kept).
    case text(String)
    /// Bytes.
    case blob(Data)

    /// Text.
    public init(stringLiteral value: String) { self = .text(value) }
    /// An integer.
    public init(integerLiteral value: Int64) { self = .integer(value) }
    /// A double.
    public init(floatLiteral value: Double) { self = .real(value) }
    /// `NULL`.
    public init(nilLiteral: ()) { self = .null }

    /// The integer, if this is one.
    public var int64: Int64? { if case .integer(let value) = self { value } else { nil } }
    /// The number as a double, if this is an integer or a double.
    public var double: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .real(let value): value
        default: nil
        }
    }
    /// The text, if this is text.
    public var string: String? { if case .text(let value) = self { value } else { nil } }
    /// The bytes, if this is a blob.
    public var data: Data? { if case .blob(let value) = self { value } else { nil } }
    /// `true` for `NULL`.
    public var isNull: Bool { self == .null }
}

/// One row of a query's result.
public struct SQLiteRow: Sendable, Hashable {
    /// The result's column names, in order.
    public let columns: [String]
    /// The values, in column order.
    public let values: [SQLiteValue]

    /// Creates a row.
    public init(columns: [String], values: [SQLiteValue]) {
        self.columns = columns
        self.values = values
    }

    /// The value of column `index`.
    public subscript(index: Int) -> SQLiteValue { values[index] }

    /// The value of the first column named `name`; `nil` when there is none.
    public subscript(name: String) -> SQLiteValue? {
        columns.firstIndex(of: name).map { values[$0] }
    }
}

/// The open write transaction of a transactional claim, for the handler's own tables.
///
/// Everything written through it commits together with the dedup record's completion, or not at
/// all. It is valid only inside the body it was passed to (later use throws), and only on that
/// thread. The store owns the transaction: `BEGIN`, `COMMIT`, `END` and `ROLLBACK` are refused
/// (``/Dedup/DedupError/Code/handlerStatementFailed``); `SAVEPOINT`, `ROLLBACK TO` and `RELEASE`
/// are allowed, to undo part of the handler's writes.
public final class SQLiteTransaction {
    private var connection: Connection?
    /// The failure of a statement upon which SQLite rolled back the whole transaction.
    private var rollbackCause: DedupError?

    init(connection: Connection) {
        self.connection = connection
    }

    func invalidate() { connection = nil }

    private func open() throws -> Connection {
        guard let connection else {
            throw DedupError(.invalidConfiguration, "an SQLiteTransaction was used after its transactional claim ended")
        }
        // Outside the transaction a statement would commit on its own, without the claim.
        guard connection.isInTransaction else { throw rolledBack }
        return connection
    }

    /// The error for what the handler does once SQLite has rolled the whole transaction back when
    /// a statement failed (a conflict clause `OR ROLLBACK`, a trigger's `RAISE(ROLLBACK)`, a full
    /// disk or an I/O error), with that failure's code.
    var rolledBack: DedupError {
        guard let cause = rollbackCause else {
            return DedupError(
                .handlerStatementFailed,
                "the store's transaction was rolled back inside the handler; nothing in it is kept"
            )
        }
        return DedupError(
            cause.code,
            "the store's transaction was rolled back when an earlier statement failed (\(cause.message)); "
                + "nothing in it is kept, and the handler cannot write on",
            sqliteExtendedResultCode: cause.sqliteExtendedResultCode,
            underlyingError: cause.underlyingError
        )
    }

    /// `failure` as the handler's error, noting it if SQLite rolled the transaction back with it.
    private func failed(_ failure: SQLiteFailure, _ connection: Connection) -> DedupError {
        let error = failure.handlerStatementError(path: connection.path)
        if rollbackCause == nil && !connection.isInTransaction { rollbackCause = error }
        return error
    }

    /// Runs one statement with `bindings` (`?`, `?NNN` parameters in order); returns the number of
    /// rows it changed. Without bindings, `sql` may hold several statements (schema setup).
    ///
    /// - Throws: ``/Dedup/DedupError/Code/handlerStatementFailed`` when the statement or its data
    ///   is at fault: a constraint it violates (`UNIQUE`, `NOT NULL`, `CHECK`, a `STRICT`
    ///   column's type), a datatype mismatch, an SQL error (syntax, a missing table or column), a value too big,
    ///   bindings that do not match its parameters, or transaction control, which the store owns;
    ///   the message holds SQLite's, and ``/Dedup/DedupError/sqliteExtendedResultCode`` its code.
    ///   The store's own failures keep their codes: ``/Dedup/DedupError/Code/busy``,
    ///   ``/Dedup/DedupError/Code/outOfMemory`` (out of memory, the disk full),
    ///   ``/Dedup/DedupError/Code/readOnly``, ``/Dedup/DedupError/Code/corruptStore``,
    ///   ``/Dedup/DedupError/Code/storeError`` (an I/O error, and the rest). Once SQLite has rolled
    ///   the whole transaction back upon a failure, every later statement throws that failure's code.
    @discardableResult
    public func execute(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> Int {
        let connection = try open()
        do {
            if bindings.isEmpty && Self.mayHoldSeveral(sql) {
                let before = sqlite3_total_changes64(connection.db)
                try connection.execute(sql)
                return Int(sqlite3_total_changes64(connection.db) - before)
            }
            let statement = try connection.cachedStatement(sql)
            defer { statement.reset() }
            try Self.bind(statement, bindings)
            while try statement.step() {}
            return connection.changes
        } catch let failure as SQLiteFailure {
            throw failed(failure, connection)
        }
    }

    /// Runs one statement with `bindings` (variadic form).
    @discardableResult
    public func execute(_ sql: String, _ bindings: SQLiteValue...) throws -> Int {
        try execute(sql, bindings)
    }

    /// Runs a query and returns all its rows.
    ///
    /// - Throws: as ``execute(_:_:)-(_,[SQLiteValue])`` does.
    public func query(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> [SQLiteRow] {
        let connection = try open()
        do {
            let statement = try connection.cachedStatement(sql)
            defer { statement.reset() }
            try Self.bind(statement, bindings)
            let count = sqlite3_column_count(statement.handle)
            let columns = (0..<count).map { String(cString: sqlite3_column_name(statement.handle, $0)) }
            var rows: [SQLiteRow] = []
            while try statement.step() {
                rows.append(SQLiteRow(columns: columns, values: (0..<count).map { statement.value($0) }))
            }
            return rows
        } catch let failure as SQLiteFailure {
            throw failed(failure, connection)
        }
    }

    /// Runs a query (variadic form).
    public func query(_ sql: String, _ bindings: SQLiteValue...) throws -> [SQLiteRow] {
        try query(sql, bindings)
    }

    /// The rowid of the last row this connection inserted.
    public var lastInsertRowID: Int64 {
        get throws { sqlite3_last_insert_rowid(try open().db) }
    }

    private static func bind(_ statement: Statement, _ bindings: [SQLiteValue]) throws {
        let expected = Int(sqlite3_bind_parameter_count(statement.handle))
        guard expected == bindings.count else {
            throw DedupError(
                .handlerStatementFailed,
                "the handler's SQL statement takes \(expected) parameters but \(bindings.count) values were given"
            )
        }
        for (index, value) in bindings.enumerated() { statement.bind(Int32(index + 1), value) }
    }

    /// Whether the text has a `;` before its end (then it is run with `sqlite3_exec`).
    private static func mayHoldSeveral(_ sql: String) -> Bool {
        guard let semicolon = sql.utf8.firstIndex(of: UInt8(ascii: ";")) else { return false }
        return sql.utf8[sql.utf8.index(after: semicolon)...].contains {
            !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09)
        }
    }
}

/// What a transactional claim did.
public enum TransactionalOutcome: Sendable, Hashable {
    /// The handler ran and its writes and the completed record committed together.
    case committed(Lease, result: Data?)
    /// The key was already completed; the handler did not run and nothing was written.
    case duplicate(DedupRecord)
    /// A non-transactional consumer holds a live lease on the key; the handler did not run.
    case inFlight(DedupRecord)
    /// The key's record carries a different payload fingerprint; the handler did not run.
    case payloadMismatch(DedupRecord)
}

extension SQLiteDedupStore {
    /// Claims a key, runs `body` and completes the key, all in one `BEGIN IMMEDIATE` transaction,
    /// so the handler's own writes (through the ``SQLiteTransaction``) and the completed record
    /// commit together or not at all: exactly-once effects for data in the same file.
    ///
    /// - If the key is acquirable (absent, expired, or an in-flight lease that has passed), `body`
    ///   runs with the lease; its return value is stored as the record's result, kept for
    ///   `retention`. Then the transaction commits → ``TransactionalOutcome/committed(_:result:)``.
    /// - If `body` throws, the transaction rolls back: no record, no effect; the error is rethrown
    ///   as is, so a redelivery runs the handler again. A statement of `body`'s that failed because
    ///   of the statement or its data throws ``/Dedup/DedupError/Code/handlerStatementFailed`` (see
    ///   ``SQLiteTransaction/execute(_:_:)-(_,[SQLiteValue])``).
    /// - Otherwise nothing is written and the answer says why (duplicate, in flight, mismatch).
    ///
    /// The claim is never visible as in flight to others: the transaction holds the database's
    /// write lock while `body` runs, so keep `body` short and do no waiting in it (other writers
    /// of the file, in every process, wait meanwhile, up to their busy timeout, and so do this
    /// store's other calls).
    ///
    /// **Where `body` runs.** When the write lock is free, the whole transaction (`BEGIN
    /// IMMEDIATE`, claim, `body`, completion, `COMMIT`) runs inline on the calling task, on the
    /// store's inline connection, like a single claim: no thread hop. When another connection
    /// holds the lock, the transaction is handed, before `body` has run, to the store's worker
    /// thread, which waits for the lock up to ``Configuration/busyTimeout`` and runs `body` there.
    /// Either way `body` runs once per call, on one thread, and must not call the store itself.
    /// (A file not in WAL mode always takes the worker thread: its commit may have to wait for readers.)
    ///
    /// - Parameters:
    ///   - request: the key to claim; its `lease` only matters if the process dies mid-body (it
    ///     does not: the transaction is then rolled back by SQLite).
    ///   - retention: how long the completed record is kept.
    ///   - body: the handler; writes through the transaction handle, returns the result to store.
    /// - Throws: `body`'s error (``/Dedup/DedupError/Code/handlerStatementFailed`` from its
    ///   statements among them), or ``/Dedup/DedupError`` (``/Dedup/DedupError/Code/busy`` when the
    ///   write lock stayed busy past the busy timeout, and the other store failures).
    public func withTransactionalClaim(
        _ request: ClaimRequest,
        retention: Duration,
        _ body: @escaping @Sendable (SQLiteTransaction, Lease) throws -> Data?
    ) async throws -> TransactionalOutcome {
        try ClaimRequest.validate(ownerLabel: request.ownerLabel)
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        let clock = configuration.clock
        let attempt: @Sendable (Connection) throws -> TransactionalOutcome = { connection in
            try Self.runTransactional(connection, request, retention: retention, clock: clock, body)
        }
        // Inline, a busy lock met before `body` runs sends the attempt to the worker thread.
        return try await runsTransactionsInline
            ? perform("transactional claim", attempt) : onWorker("transactional claim", attempt)
    }

    /// A duplicate or in-flight key is answered by a read, with no write lock; otherwise the claim,
    /// `body` and the completion run in one `BEGIN IMMEDIATE` transaction.
    ///
    /// Only the read, `BEGIN IMMEDIATE` and the claim may throw a busy `SQLiteFailure` (which
    /// `perform` retries on the worker thread): once `body` has run, a busy failure is thrown as
    /// the `DedupError` it maps to, so `body` never runs twice for one call.
    private static func runTransactional(
        _ connection: Connection,
        _ request: ClaimRequest,
        retention: Duration,
        clock: any DedupClock,
        _ body: (SQLiteTransaction, Lease) throws -> Data?
    ) throws -> TransactionalOutcome {
        switch RecordSQL.answerWithoutWrite(
            try RecordSQL.read(connection, request.id),
            request,
            now: clock.nowMilliseconds()
        ) {
        case .duplicate(let record)?: return .duplicate(record)
        case .inFlight(let record)?: return .inFlight(record)
        case .payloadMismatch(let record)?: return .payloadMismatch(record)
        case .acquired?, nil: break
        }
        try connection.run(.begin)
        // Taken once the lock is held (after the wait for it, on the worker thread).
        let now = clock.nowMilliseconds()
        do {
            let answer = try RecordSQL.claim(connection, request, now: now)
            let lease: Lease
            switch answer {
            case .acquired(let acquired):
                lease = acquired
            case .duplicate(let record):
                connection.rollbackIfNeeded()
                return .duplicate(record)
            case .inFlight(let record):
                connection.rollbackIfNeeded()
                return .inFlight(record)
            case .payloadMismatch(let record):
                connection.rollbackIfNeeded()
                return .payloadMismatch(record)
            }
            do {
                let result = try runHandler(connection) { try body($0, lease) }
                let completion = Completion(lease: lease, retention: retention, result: result)
                guard try RecordSQL.complete(connection, completion, now: now) else {
                    throw SQLiteFailure(
                        code: SQLITE_INTERNAL,
                        message: "the claimed record vanished inside its transaction"
                    )
                }
                try connection.run(.commit)
                return .committed(lease, result: result)
            } catch let failure as SQLiteFailure where failure.isBusy {
                throw failure.dedupError("transactional claim", path: connection.path)
            }
        } catch {
            connection.rollbackIfNeeded()
            throw error
        }
    }

    /// Runs a handler's `body` inside the open transaction, with a handle that refuses transaction
    /// control and ends with it; throws if SQLite rolled the transaction back meanwhile.
    static func runHandler<Value>(_ connection: Connection, _ body: (SQLiteTransaction) throws -> Value) throws -> Value
    {
        let transaction = SQLiteTransaction(connection: connection)
        let result: Value
        do {
            connection.refusesTransactionControl = true
            defer {
                connection.refusesTransactionControl = false
                transaction.invalidate()
            }
            result = try body(transaction)
        }
        guard connection.isInTransaction else { throw transaction.rolledBack }
        return result
    }
}

extension SQLiteFailure {
    /// The ``/Dedup/DedupError`` for a failed statement the handler ran through an
    /// ``SQLiteTransaction``.
    ///
    /// A failure of the statement or its data is the handler's,
    /// ``/Dedup/DedupError/Code/handlerStatementFailed``: it fails again on every delivery, so a
    /// consumer counts it as a handler failure and a stream consumer dead-letters its entry.
    /// - `SQLITE_CONSTRAINT` (every kind), `SQLITE_MISMATCH`, `SQLITE_RANGE`, `SQLITE_TOOBIG`: the data.
    /// - `SQLITE_ERROR`: the SQL (syntax, a missing table or column, a function refusing its
    ///   arguments). The transaction holds the write lock, so no other writer's doing ends here.
    /// - `SQLITE_MISUSE`: text with no statement, or with several and bindings.
    /// - `SQLITE_AUTH`: transaction control, refused by the store's authorizer (the connection's only one).
    ///
    /// The rest is the store's, mapped as ``dedupError(_:path:)`` maps every store failure: busy or
    /// locked, I/O, a full disk, out of memory, read-only, corrupt, SQLite's internal failures.
    func handlerStatementError(path: String) -> DedupError {
        let statementFailure: String
        switch code & 0xff {
        case SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE, SQLITE_TOOBIG, SQLITE_ERROR, SQLITE_MISUSE:
            statementFailure = "the handler's SQL statement failed on \(path.debugDescription): \(message)"
        case SQLITE_AUTH:
            statementFailure =
                "the handler's SQL statement on \(path.debugDescription) tried to end or start a transaction: the store owns "
                + "the transaction (it commits the handler's writes when the handler returns, with the dedup record's "
                + "completion in a transactional claim, and rolls them back when it throws), so BEGIN, COMMIT, END and "
                + "ROLLBACK cannot run in it; use SAVEPOINT, ROLLBACK TO and RELEASE to undo part of the writes, or throw "
                + "to undo them all"
        default:
            return dedupError("the handler's SQL statement", path: path)
        }
        return DedupError(.handlerStatementFailed, statementFailure, sqliteExtendedResultCode: code)
    }
}
