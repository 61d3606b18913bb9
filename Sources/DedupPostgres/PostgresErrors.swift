import Dedup
import Foundation
import PostgresNIO

/// PostgreSQL's error codes (SQLSTATE) the store tells apart.
enum SQLState {
    static let serializationFailure = "40001"
    static let deadlockDetected = "40P01"
    static let lockNotAvailable = "55P03"
    static let queryCanceled = "57014"

    /// The class of `state`: its first two characters.
    static func errorClass(_ state: String) -> Substring { state.prefix(2) }
}

extension PSQLError {
    /// The server's SQLSTATE, when the server sent the error.
    var sqlState: String? { serverInfo?[.sqlState] }
}

/// Maps postgres-nio's and the network's failures to ``/Dedup/DedupError``, keeping the native
/// error as ``/Dedup/DedupError/underlyingError`` and a server error's SQLSTATE as
/// ``/Dedup/DedupError/postgresSQLState``.
enum PostgresFailure {
    /// The SQLSTATE behind `error`, looking through postgres-nio's transaction wrapper.
    static func sqlState(of error: any Error) -> String? {
        if let error = error as? PSQLError { return error.sqlState }
        if let error = error as? DedupError {
            return error.postgresSQLState ?? error.underlyingError.flatMap { sqlState(of: $0) }
        }
        if let error = error as? PostgresTransactionError {
            for inner in [error.closureError, error.commitError, error.beginError].compactMap({ $0 }) {
                if let state = sqlState(of: inner) { return state }
            }
        }
        return nil
    }

    /// `error` as a ``/Dedup/DedupError``; one already is stays as it is.
    static func dedupError(_ error: any Error, _ context: String) -> DedupError {
        if let error = error as? DedupError { return error }
        if let error = error as? PostgresTransactionError {
            if let inner = error.closureError ?? error.commitError ?? error.beginError {
                return dedupError(inner, context)
            }
        }
        if let error = error as? PSQLError { return psqlError(error, context) }
        if error is CancellationError {
            return DedupError(.storeUnavailable, "\(context): cancelled", underlyingError: error)
        }
        // Channel and socket errors (connection refused, reset) come from NIO as their own types.
        return DedupError(.storeUnavailable, "\(context): \(String(reflecting: error))", underlyingError: error)
    }

    private static func psqlError(_ error: PSQLError, _ context: String) -> DedupError {
        if let state = error.sqlState {
            let text = error.serverInfo?[.message] ?? ""
            let message = "\(context): PostgreSQL error \(state): \(text)"
            return DedupError(code(sqlState: state), message, postgresSQLState: state, underlyingError: error)
        }
        let code: DedupError.Code
        switch error.code {
        case .authMechanismRequiresPassword, .unsupportedAuthMechanism, .saslError:
            code = .authenticationFailed
        case .sslUnsupported, .failedToAddSSLHandler, .receivedUnencryptedDataAfterSSLRequest, .tooManyParameters:
            code = .invalidConfiguration
        case .queryCancelled:
            code = .timeout
        case .messageDecodingFailure, .unexpectedBackendMessage, .invalidCommandTag:
            code = .storeError
        default:
            // Connection errors, closed connections and a closed pool: the server cannot be reached.
            code = .storeUnavailable
        }
        let cause = error.underlying.map { ": \(String(reflecting: $0))" } ?? ""
        return DedupError(code, "\(context): \(error.code)\(cause)", underlyingError: error)
    }

    /// The ``/Dedup/DedupError/Code`` of an SQLSTATE.
    static func code(sqlState state: String) -> DedupError.Code {
        switch state {
        case "28P01", "28000": return .authenticationFailed
        case SQLState.lockNotAvailable: return .busy
        case SQLState.queryCanceled: return .timeout
        case "53100", "53200": return .outOfMemory
        case "25006": return .readOnly
        case "42501": return .permissionDenied
        // A table or column the schema should have is missing: not (or no longer) a dedup store.
        case "42P01", "42703": return .corruptStore
        case "57P01", "57P02", "57P03": return .storeUnavailable
        default:
            // Class 08: connection exceptions.
            return SQLState.errorClass(state) == "08" ? .storeUnavailable : .storeError
        }
    }
}
