import Foundation

/// The one error type of swift-dedup: what went wrong, as a ``Code`` a program can switch on, and a
/// message a person can act on.
///
/// `Code` is a struct rather than an enum so that new codes do not break code that switches on it.
///
/// When a store's own failure caused the error, the error keeps that cause beside the code, as the
/// store reported it: ``sqliteExtendedResultCode`` for SQLite, ``redisErrorText`` for a Redis error
/// reply, ``postgresSQLState`` for a PostgreSQL server error, and ``underlyingError`` for an error
/// of another kind (an operating system error, the store failure behind a lost lease, the
/// PostgreSQL client's own error). Each is `nil` when it does not apply; more causes may be added
/// as further optional properties.
///
/// Two errors are equal when their code, message, ``sqliteExtendedResultCode``,
/// ``redisErrorText`` and ``postgresSQLState`` are; ``underlyingError`` is not compared (errors in
/// general are not `Equatable`), nor hashed.
public struct DedupError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidNamespace, invalidKey, missingKey, invalidConfiguration
            case leaseLost, payloadMismatch, handlerStatementFailed
            case storeUnavailable, timeout, busy, authenticationFailed, corruptStore
            case schemaTooNew, schemaOutdated, schemaAltered, wrongType, readOnly, outOfMemory
            case permissionDenied, storeError
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The namespace is empty or longer than 128 UTF-8 bytes.
        public static let invalidNamespace = Code(.invalidNamespace)
        /// The key is empty or longer than the key limit.
        public static let invalidKey = Code(.invalidKey)
        /// The key strategy found no key in the message and the policy is ``MissingKeyPolicy/reject``.
        public static let missingKey = Code(.missingKey)
        /// A configuration value is out of range or a store URL cannot be used.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The caller's lease is no longer the record's current one (expired and taken over,
        /// released, completed, or deleted): nothing was changed.
        public static let leaseLost = Code(.leaseLost)
        /// The key was claimed or completed with a different payload fingerprint.
        public static let payloadMismatch = Code(.payloadMismatch)
        /// A statement the handler ran inside the store's own transaction (SQLite's transactional
        /// mode) failed because of the statement or its data, not because of the store: a
        /// constraint (`UNIQUE`, `NOT NULL`, `CHECK`, a `STRICT` column's type), a datatype
        /// mismatch, an SQL error (a syntax error, a missing table or column), a value too big,
        /// bindings that do not match the parameters, or transaction control (`BEGIN`, `COMMIT`,
        /// `ROLLBACK`), which the store refuses because it owns the transaction. The message gives
        /// the database's own words, and ``DedupError/sqliteExtendedResultCode`` its code. Nothing
        /// the handler wrote is kept.
        ///
        /// Not a store failure (``DedupError/isStoreFailure`` is `false`): the same statement on
        /// the same data fails again on every delivery, so a consumer counts it as a handler
        /// failure, and a stream consumer toward its dead-letter limit.
        public static let handlerStatementFailed = Code(.handlerStatementFailed)
        /// The store cannot be reached: connection refused or reset, server down, file not openable.
        public static let storeUnavailable = Code(.storeUnavailable)
        /// The store did not answer in time (a network timeout).
        public static let timeout = Code(.timeout)
        /// The store answered, but another writer held its lock past the busy timeout (SQLite).
        /// Not "unreachable": fail-open never runs a handler past it, since the store is healthy
        /// and the lock holder may be processing the same key.
        public static let busy = Code(.busy)
        /// The store refused the credentials.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The store's data is damaged or is not a dedup store (a corrupt SQLite file, say).
        public static let corruptStore = Code(.corruptStore)
        /// The store's schema was written by a newer swift-dedup than this one.
        public static let schemaTooNew = Code(.schemaTooNew)
        /// The store's schema is older than this library's, and the caller would not migrate it
        /// (`dedup-inspect` reads and deletes only on a current schema; a consumer migrates on open).
        public static let schemaOutdated = Code(.schemaOutdated)
        /// A migration already applied to the store differs from the one this library ships.
        public static let schemaAltered = Code(.schemaAltered)
        /// The store holds someone else's data where a dedup record belongs (Redis `WRONGTYPE`).
        public static let wrongType = Code(.wrongType)
        /// The store accepts no writes (a Redis replica, a read-only file or file system).
        public static let readOnly = Code(.readOnly)
        /// The store is out of memory or disk.
        public static let outOfMemory = Code(.outOfMemory)
        /// The operating system refused access to the store (file permissions).
        public static let permissionDenied = Code(.permissionDenied)
        /// Any other failure reported by the store.
        public static let storeError = Code(.storeError)

        /// The code's name, as used in metrics labels and JSON output.
        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened, for a person.
    public var message: String
    /// The SQLite extended result code behind the error (`SQLITE_BUSY` is 5, `SQLITE_CORRUPT` 11,
    /// `SQLITE_READONLY_DBMOVED` 1032, and so on; its low byte is the primary result code); `nil`
    /// when SQLite reported no failure.
    public var sqliteExtendedResultCode: Int32?
    /// The Redis server's error reply behind the error, as the server wrote it (`WRONGTYPE
    /// Operation against a key holding the wrong kind of value`, `NOAUTH Authentication
    /// required.`); `nil` when the server sent none.
    public var redisErrorText: String?
    /// The PostgreSQL server's error code (SQLSTATE) behind the error, five characters as the server
    /// sent them (`40001` serialization_failure, `55P03` lock_not_available, `57014`
    /// query_canceled, `42501` insufficient_privilege, and so on; the first two are the error's
    /// class); `nil` when the server sent no error (a connection that failed, a call that timed
    /// out waiting for the answer).
    public var postgresSQLState: String?
    /// The error behind this one when it is of another kind: the operating system's error for a
    /// file or socket that failed (a `POSIXError`), or the store failure that kept a lease from
    /// being renewed until it was lost. `nil` when there is none.
    public var underlyingError: (any Error)?

    /// Creates an error.
    ///
    /// - Parameters:
    ///   - code: What kind of failure this is.
    ///   - message: What happened, for a person.
    ///   - sqliteExtendedResultCode: The SQLite extended result code behind it, if any.
    ///   - redisErrorText: The Redis server's error reply behind it, if any.
    ///   - postgresSQLState: The PostgreSQL server's SQLSTATE behind it, if any.
    ///   - underlyingError: The error of another kind behind it, if any.
    public init(
        _ code: Code,
        _ message: String,
        sqliteExtendedResultCode: Int32? = nil,
        redisErrorText: String? = nil,
        postgresSQLState: String? = nil,
        underlyingError: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.sqliteExtendedResultCode = sqliteExtendedResultCode
        self.redisErrorText = redisErrorText
        self.postgresSQLState = postgresSQLState
        self.underlyingError = underlyingError
    }

    /// Whether two errors have the same code, message, ``sqliteExtendedResultCode``,
    /// ``redisErrorText`` and ``postgresSQLState`` (``underlyingError`` is not compared).
    public static func == (lhs: DedupError, rhs: DedupError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
            && lhs.sqliteExtendedResultCode == rhs.sqliteExtendedResultCode
            && lhs.redisErrorText == rhs.redisErrorText
            && lhs.postgresSQLState == rhs.postgresSQLState
    }

    /// Hashes what ``==(_:_:)`` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
        hasher.combine(sqliteExtendedResultCode)
        hasher.combine(redisErrorText)
        hasher.combine(postgresSQLState)
    }

    /// `true` for failures to reach the store at all, the ones ``StoreFailurePolicy/failOpen`` may
    /// run the handler through. Misconfiguration (a wrong password, a newer schema) is never among
    /// them: running without dedup because of a typo would be silent data damage.
    public var isStoreUnreachable: Bool {
        code == .storeUnavailable || code == .timeout
    }

    /// `true` for errors raised by the store, as opposed to errors in the caller's input, a lost
    /// lease, a payload mismatch or a handler's own failed statement
    /// (``Code/handlerStatementFailed``).
    public var isStoreFailure: Bool {
        switch code {
        case .invalidNamespace, .invalidKey, .missingKey, .invalidConfiguration, .leaseLost, .payloadMismatch,
            .handlerStatementFailed:
            return false
        default:
            return true
        }
    }

    /// `code: message`.
    public var description: String { "\(code): \(message)" }
}

extension POSIXError {
    /// The operating system's error `number` (an `errno`) as an error; `nil` for 0 or a number this
    /// platform does not name.
    package static func number(_ number: Int32) -> POSIXError? {
        guard number != 0, let code = POSIXErrorCode(rawValue: number) else { return nil }
        return POSIXError(code)
    }
}
