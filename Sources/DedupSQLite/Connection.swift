import CSQLite
import Dedup
import Foundation

/// A failure reported by SQLite, kept raw until it leaves the store (where it becomes a
/// ``/Dedup/DedupError``), so the store can tell a busy lock (retry on the worker thread) from the rest.
struct SQLiteFailure: Error, CustomStringConvertible {
    /// The extended result code.
    var code: Int32
    /// SQLite's message.
    var message: String
    /// The OS error number behind a failed open, if SQLite knows one.
    var systemErrno: Int32 = 0

    /// Another connection holds the lock (the only failure worth retrying with a busy timeout).
    var isBusy: Bool {
        let primary = code & 0xff
        return primary == SQLITE_BUSY || primary == SQLITE_LOCKED
    }

    var description: String { "\(message) (SQLite code \(code))" }

    /// The most specific ``/Dedup/DedupError`` for this failure; `context` says what the store was doing.
    /// The error keeps the extended result code, and the operating system's error where SQLite
    /// reports one that applies (a file that cannot be opened, a failed read or write).
    func dedupError(_ context: String, path: String) -> DedupError {
        let text = "\(context) on \(path.debugDescription): \(message)"
        func error(_ code: DedupError.Code, _ message: String, withSystemError: Bool = false) -> DedupError {
            DedupError(
                code,
                message,
                sqliteExtendedResultCode: self.code,
                underlyingError: withSystemError ? POSIXError.number(systemErrno) : nil
            )
        }
        switch code & 0xff {
        case SQLITE_BUSY, SQLITE_LOCKED:
            return error(.busy, "\(text): another connection held the lock past the busy timeout")
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return error(.corruptStore, "\(text): the file is damaged or is not an SQLite database")
        case SQLITE_READONLY:
            return error(.readOnly, "\(text): the database accepts no writes")
        case SQLITE_FULL:
            return error(.outOfMemory, "\(text): the disk is full")
        case SQLITE_NOMEM:
            return error(.outOfMemory, "\(text): out of memory")
        case SQLITE_PERM, SQLITE_AUTH:
            return error(.permissionDenied, "\(text): access denied")
        case SQLITE_CANTOPEN:
            switch systemErrno {
            case EACCES, EPERM:
                return error(.permissionDenied, "\(text): permission denied", withSystemError: true)
            case EROFS:
                return error(.readOnly, "\(text): the file system is read-only", withSystemError: true)
            case ENOSPC:
                return error(.outOfMemory, "\(text): the disk is full", withSystemError: true)
            default:
                let reason = systemErrno != 0 ? String(cString: strerror(systemErrno)) : "cannot open the file"
                return error(.storeUnavailable, "\(text): \(reason)", withSystemError: true)
            }
        case SQLITE_IOERR:
            // SQLITE_IOERR_NOMEM, a macro Swift does not import.
            if code == SQLITE_IOERR | (12 << 8) { return error(.outOfMemory, "\(text): out of memory") }
            return error(.storeError, "\(text): disk I/O error", withSystemError: true)
        default:
            return error(.storeError, text)
        }
    }
}

/// A prepared statement. Not thread-safe: used by the one thread that holds its connection.
final class Statement {
    let handle: OpaquePointer
    unowned let connection: Connection

    init(handle: OpaquePointer, connection: Connection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    /// Binds UTF-8 text with its explicit byte length, so NUL inside a key is kept.
    @inline(__always)
    func bind(_ index: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            if let base = bytes.baseAddress, bytes.count > 0 {
                _ = base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                    sqlite3_bind_text(handle, index, $0, Int32(bytes.count), dedup_sqlite_transient())
                }
            } else {
                _ = sqlite3_bind_text(handle, index, "", 0, dedup_sqlite_transient())
            }
        }
    }

    @inline(__always)
    func bind(_ index: Int32, _ text: String?) {
        if let text { bind(index, text) } else { sqlite3_bind_null(handle, index) }
    }

    @inline(__always)
    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(handle, index, value)
    }

    @inline(__always)
    func bind(_ index: Int32, _ value: Int64?) {
        if let value { bind(index, value) } else { sqlite3_bind_null(handle, index) }
    }

    @inline(__always)
    func bind(_ index: Int32, _ data: Data?) {
        guard let data else {
            sqlite3_bind_null(handle, index)
            return
        }
        if data.isEmpty {
            sqlite3_bind_zeroblob(handle, index, 0)
            return
        }
        data.withUnsafeBytes { bytes in
            _ = sqlite3_bind_blob(handle, index, bytes.baseAddress, Int32(bytes.count), dedup_sqlite_transient())
        }
    }

    func bind(_ index: Int32, _ value: SQLiteValue) {
        switch value {
        case .null: sqlite3_bind_null(handle, index)
        case .integer(let value): sqlite3_bind_int64(handle, index, value)
        case .real(let value): sqlite3_bind_double(handle, index, value)
        case .text(let value): bind(index, value)
        case .blob(let value): bind(index, Optional(value))
        }
    }

    /// Steps once: `true` when a row is ready, `false` when done.
    @inline(__always)
    func step() throws(SQLiteFailure) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.failure(rc)
    }

    /// Resets for the next use; bindings are overwritten by the next use.
    @inline(__always)
    func reset() {
        sqlite3_reset(handle)
    }

    @inline(__always)
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    @inline(__always)
    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    @inline(__always)
    func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }

    /// Text of the column, byte-exact (NUL included).
    func text(_ column: Int32) -> String? {
        guard let pointer = sqlite3_column_text(handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> Data? {
        if isNull(column) { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return Data() }
        return Data(bytes: pointer, count: count)
    }

    func value(_ column: Int32) -> SQLiteValue {
        switch sqlite3_column_type(handle, column) {
        case SQLITE_INTEGER: return .integer(int64(column))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, column))
        case SQLITE_TEXT: return .text(text(column) ?? "")
        case SQLITE_BLOB: return .blob(blob(column) ?? Data())
        default: return .null
        }
    }
}

/// The fixed statements of the store, prepared once per connection.
enum CachedSQL: Int, CaseIterable {
    case select, upsert, upsertInTransaction, complete, release, renew, begin, commit, rollback

    var text: String {
        switch self {
        case .select:
            return """
                SELECT state, owner_token, fencing, attempt, created_at, lease_until, completed_at, \
                expires_at, fingerprint, result, owner_label, broker_ms FROM dedup_records WHERE namespace = ?1 AND key = ?2
                """
        case .upsert:
            // One atomic statement: insert, or replace a record that is no longer live, or take over
            // an in-flight record whose lease has passed (and whose fingerprint does not conflict).
            // Any other existing record is left alone and no row is returned.
            // ?1 namespace ?2 key ?3 owner ?4 now ?5 lease_until ?6 expires_at ?7 fingerprint ?8 owner label
            // ?9 broker time (kept only by a claim that creates the row: a takeover leaves it)
            return Self.upsertInTransaction.text + " RETURNING fencing, attempt, created_at"
        case .upsertInTransaction:
            // The upsert without RETURNING, for a transaction that read the row first: the read
            // tells what the write sets, and RETURNING costs an ephemeral table per execution
            // (a b-tree opened, a page allocated and zeroed, then closed).
            return """
                INSERT INTO dedup_records (namespace, key, state, owner_token, fencing, attempt, created_at, \
                lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms) \
                VALUES (?1, ?2, 'in_flight', ?3, 1, 1, ?4, ?5, NULL, ?6, ?7, NULL, ?8, ?9) \
                ON CONFLICT (namespace, key) DO UPDATE SET \
                state = 'in_flight', owner_token = excluded.owner_token, owner_label = excluded.owner_label, \
                fencing = CASE WHEN expires_at <= ?4 THEN 1 ELSE fencing + 1 END, \
                attempt = CASE WHEN expires_at <= ?4 THEN 1 ELSE attempt + 1 END, \
                created_at = CASE WHEN expires_at <= ?4 THEN excluded.created_at ELSE created_at END, \
                broker_ms = CASE WHEN expires_at <= ?4 THEN excluded.broker_ms ELSE broker_ms END, \
                lease_until = excluded.lease_until, completed_at = NULL, expires_at = excluded.expires_at, \
                fingerprint = CASE WHEN expires_at <= ?4 THEN excluded.fingerprint \
                ELSE coalesce(fingerprint, excluded.fingerprint) END, \
                result = NULL \
                WHERE expires_at <= ?4 OR (state = 'in_flight' AND lease_until <= ?4 AND NOT \
                (fingerprint IS NOT NULL AND excluded.fingerprint IS NOT NULL AND fingerprint <> excluded.fingerprint))
                """
        case .complete:
            // ?1 namespace ?2 key ?3 owner ?4 now ?5 expires_at ?6 result
            return """
                UPDATE dedup_records SET state = 'completed', owner_token = NULL, owner_label = NULL, lease_until = NULL, \
                completed_at = ?4, expires_at = ?5, result = ?6 \
                WHERE namespace = ?1 AND key = ?2 AND owner_token = ?3 AND state = 'in_flight' AND expires_at > ?4
                """
        case .release:
            return """
                DELETE FROM dedup_records \
                WHERE namespace = ?1 AND key = ?2 AND owner_token = ?3 AND state = 'in_flight' AND expires_at > ?4
                """
        case .renew:
            // ?4 now ?5 new lease_until; the gap between lease end and expiry (the retention) is kept.
            return """
                UPDATE dedup_records SET lease_until = ?5, expires_at = ?5 + (expires_at - lease_until) \
                WHERE namespace = ?1 AND key = ?2 AND owner_token = ?3 AND state = 'in_flight' AND expires_at > ?4 \
                RETURNING lease_until
                """
        case .begin: return "BEGIN IMMEDIATE"
        case .commit: return "COMMIT"
        case .rollback: return "ROLLBACK"
        }
    }
}

/// One SQLite connection with its statement cache. Not thread-safe: the store guards the hot
/// connection with a mutex and gives the worker connection to its one thread.
final class Connection {
    let db: OpaquePointer
    let path: String
    private var cached: [Statement?] = Array(repeating: nil, count: CachedSQL.allCases.count)
    private var dynamic: [String: Statement] = [:]

    /// Opens (creating the file when `create`), in multi-thread mode: the caller serialises use.
    /// `readOnly` opens as ``openReadingOnly(_:)`` does, creating nothing.
    init(path: String, readOnly: Bool = false, create: Bool = true) throws(SQLiteFailure) {
        let handle: OpaquePointer
        if readOnly {
            handle = try Self.openReadingOnly(path)
        } else {
            handle = try Self.openHandle(path, flags: SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0))
        }
        self.db = handle
        self.path = path
        sqlite3_extended_result_codes(handle, 1)
    }

    /// `sqlite3_open_v2` in multi-thread mode with extended result codes, plus `flags`.
    static func openHandle(_ name: String, flags: Int32) throws(SQLiteFailure) -> OpaquePointer {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(name, &handle, SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE | flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            let systemErrno = handle.map { sqlite3_system_errno($0) } ?? 0
            if let handle { sqlite3_close_v2(handle) }
            throw SQLiteFailure(code: rc, message: message, systemErrno: systemErrno)
        }
        return handle
    }

    /// Finalizes statements and closes the handle.
    func close() {
        cached = []
        dynamic = [:]
        sqlite3_close_v2(db)
    }

    func failure(_ rc: Int32) -> SQLiteFailure {
        SQLiteFailure(
            code: sqlite3_extended_errcode(db) != 0 ? sqlite3_extended_errcode(db) : rc,
            message: String(cString: sqlite3_errmsg(db)),
            systemErrno: sqlite3_system_errno(db)
        )
    }

    /// A cached fixed statement, prepared persistently on first use.
    @inline(__always)
    func statement(_ sql: CachedSQL) throws(SQLiteFailure) -> Statement {
        if let statement = cached[sql.rawValue] { return statement }
        let statement = try prepare(sql.text, persistent: true)
        cached[sql.rawValue] = statement
        return statement
    }

    /// A statement cached by its text (for inspection queries and transactional handlers).
    func cachedStatement(_ sql: String) throws(SQLiteFailure) -> Statement {
        if let statement = dynamic[sql] { return statement }
        if dynamic.count >= 64 { dynamic.removeAll() }
        let statement = try prepare(sql, persistent: true)
        dynamic[sql] = statement
        return statement
    }

    /// Prepares one statement; throws when the text holds more than one.
    func prepare(_ sql: String, persistent: Bool = false) throws(SQLiteFailure) -> Statement {
        var handle: OpaquePointer?
        var tailOffset = 0
        let rc: Int32 = sql.withCString { start in
            var tail: UnsafePointer<CChar>?
            let rc = sqlite3_prepare_v3(
                db,
                start,
                -1,
                persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0,
                &handle,
                &tail
            )
            if let tail { tailOffset = start.distance(to: tail) }
            return rc
        }
        guard rc == SQLITE_OK else { throw failure(rc) }
        let rest = sql.utf8.dropFirst(tailOffset)
        if !rest.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 || $0 == 0x3B }) {
            if let handle { sqlite3_finalize(handle) }
            throw SQLiteFailure(code: SQLITE_MISUSE, message: "one SQL statement expected, found more: \(sql)")
        }
        guard let handle else {
            throw SQLiteFailure(code: SQLITE_MISUSE, message: "no SQL statement in \(sql.debugDescription)")
        }
        return Statement(handle: handle, connection: self)
    }

    /// Runs SQL text without bindings (any number of statements).
    func execute(_ sql: String) throws(SQLiteFailure) {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw failure(rc) }
    }

    /// The first column of the first row of a query, as an integer.
    func scalar(_ sql: String) throws(SQLiteFailure) -> Int64? {
        let statement = try prepare(sql)
        return try statement.step() ? statement.optionalInt64(0) : nil
    }

    /// The first column of a query's rows, as text.
    func texts(_ sql: String) throws(SQLiteFailure) -> [String] {
        let statement = try prepare(sql)
        var values: [String] = []
        while try statement.step() { values.append(statement.text(0) ?? "") }
        return values
    }

    var isInTransaction: Bool { sqlite3_get_autocommit(db) == 0 }

    /// Rolls back an open transaction (after a failure part-way through one).
    func rollbackIfNeeded() {
        if isInTransaction { sqlite3_exec(db, "ROLLBACK", nil, nil, nil) }
    }

    func setBusyTimeout(_ duration: Duration) {
        sqlite3_busy_timeout(db, Int32(clamping: duration.wholeMilliseconds))
    }

    var changes: Int { Int(sqlite3_changes64(db)) }

    /// While `true`, preparing `BEGIN`, `COMMIT` or `ROLLBACK` (not savepoints) fails, so a
    /// transactional handler cannot commit the claim without its completion. Checked by the
    /// authorizer ``installTransactionGuard()`` installs.
    var refusesTransactionControl = false

    /// Installs the authorizer once (installing one expires every prepared statement, so it is not
    /// toggled per transaction; the flag is).
    func installTransactionGuard() {
        sqlite3_set_authorizer(
            db,
            { context, action, _, _, _, _ in
                guard let context, action == SQLITE_TRANSACTION else { return SQLITE_OK }
                let connection = Unmanaged<Connection>.fromOpaque(context).takeUnretainedValue()
                return connection.refusesTransactionControl ? SQLITE_DENY : SQLITE_OK
            },
            Unmanaged.passUnretained(self).toOpaque()
        )
    }

    /// Runs a cached fixed statement with `bind`, resetting it afterwards whatever happens.
    @inline(__always)
    func with<R>(_ sql: CachedSQL, _ body: (Statement) throws(SQLiteFailure) -> R) throws(SQLiteFailure) -> R {
        let statement = try statement(sql)
        defer { statement.reset() }
        return try body(statement)
    }

    /// Runs a one-step statement (BEGIN, COMMIT, ROLLBACK).
    @inline(__always)
    func run(_ sql: CachedSQL) throws(SQLiteFailure) {
        try with(sql) { statement throws(SQLiteFailure) in _ = try statement.step() }
    }
}
