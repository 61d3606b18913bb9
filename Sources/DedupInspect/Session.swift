import ArgumentParser
import Dedup
import DedupRedis
import DedupStoreLocator
import Foundation

/// What a running subcommand works with: the opened store, where output goes, and how to report
/// failures. Every subcommand runs through ``run(_:opening:_:)`` so that errors are reported the
/// same way everywhere, with the store's secrets scrubbed, and end in a documented exit code.
final class Session {
    let options: GlobalOptions
    let location: StoreLocation
    let out = OutputSink()
    /// Set by a command that has work to account for when an error stops it (a JSON document
    /// already opened, records already deleted): called instead of printing the plain error
    /// document, after the error line on stderr.
    var onError: ((DedupError, ExitStatus) -> Void)?
    /// Secrets besides the store's that no output may carry (a stream location's password).
    var otherSecrets: [String] = []
    /// What an error names as the server it concerns while a command talks to another server than
    /// the store (a stream's): the store when `nil`.
    var target: String?

    var json: Bool { options.format == .json }

    private init(options: GlobalOptions, location: StoreLocation) {
        self.options = options
        self.location = location
    }

    /// How a subcommand needs the store opened.
    enum OpenMode {
        /// The store must exist already (a SQLite file that is not there is an error, not a new file)
        /// with a current schema.
        case existing
        /// As ``existing``, for a subcommand that only reads: SQLite is opened read-only, so a file
        /// or directory the operator cannot write is fine and nothing is created beside the file.
        case readOnly
        /// The subcommand opens the store itself (`check`, `migrate`).
        case none
    }

    /// Opens the store, runs `body`, reports any error, and throws the exit code when not zero.
    static func run(
        _ options: GlobalOptions,
        opening mode: OpenMode = .existing,
        _ body: (Session, (any DedupStore)?) async throws -> ExitStatus
    ) async throws {
        let location: StoreLocation
        do {
            location = try options.location()
        } catch {
            // Not a store error: the argument is wrong. Report like ArgumentParser does.
            StandardError.write("Error: \(error.message)\n")
            if options.format == .json {
                let sink = OutputSink()
                sink.line(errorDocument(error, status: .usage).rendered)
                sink.flush()
            }
            throw ExitStatus.usage.exitCode
        }
        let session = Session(options: options, location: location)
        let status: ExitStatus
        do {
            let store: (any DedupStore)?
            switch mode {
            case .none: store = nil
            case .existing: store = try await StoreAccess.open(location)
            case .readOnly: store = try await StoreAccess.open(location, readOnly: true)
            }
            status = try await body(session, store)
        } catch let error as DedupError {
            status = session.report(error)
        } catch let error as ExitCode {
            session.out.flush()
            throw error
        } catch is CancellationError {
            status = session.report(DedupError(.storeError, "cancelled"))
        } catch {
            // Stores throw DedupError only; anything else is still a store failure, never success.
            status = session.report(DedupError(.storeError, "\(error)", underlyingError: error))
        }
        session.out.flush()
        if status != .success { throw status.exitCode }
    }

    /// Prints an error (scrubbed of secrets) on stderr and, for JSON, as the command's document.
    func report(_ error: DedupError) -> ExitStatus {
        let status = ExitStatus(for: error)
        let scrubbed = DedupError(
            error.code,
            URLCredentials.removing(otherSecrets, from: location.redactingSecrets(in: error.message))
        )
        let subject = target ?? location.description
        switch status {
        case .usage: StandardError.write("Error: \(scrubbed.message)\n")
        case .storeUnreachable:
            StandardError.write("dedup-inspect: cannot reach \(subject): \(scrubbed.code): \(scrubbed.message)\n")
        case .schemaMismatch:
            StandardError.write("dedup-inspect: schema problem in \(subject): \(scrubbed.code): \(scrubbed.message)\n")
        default:
            StandardError.write(
                "dedup-inspect: \(target ?? "store \(location)"): \(scrubbed.code): \(scrubbed.message)\n"
            )
        }
        if let onError {
            self.onError = nil
            onError(scrubbed, status)
        } else if json {
            out.line(Self.errorDocument(scrubbed, status: status).rendered)
        }
        return status
    }

    /// `{"error":{"code":…,"message":…,"exit_code":…}}`.
    static func errorDocument(_ error: DedupError, status: ExitStatus) -> JSONValue {
        errorDocument(code: error.code.description, message: error.message, status: status)
    }

    /// `{"error":{"code":…,"message":…,"exit_code":…}}` for an error that is no store's: `usage`
    /// (arguments the parser refused), `confirmationRequired` (a deletion that needs one more flag).
    static func errorDocument(code: String, message: String, status: ExitStatus) -> JSONValue {
        .object([("error", errorObject(code: code, message: message, status: status))])
    }

    /// The error member of a JSON document.
    static func errorObject(_ error: DedupError, status: ExitStatus) -> JSONValue {
        errorObject(code: error.code.description, message: error.message, status: status)
    }

    /// The error member of a JSON document, from its parts.
    static func errorObject(code: String, message: String, status: ExitStatus) -> JSONValue {
        .object([
            ("code", .string(code)),
            ("message", .string(message)),
            ("exit_code", .int(Int64(status.rawValue))),
        ])
    }

    /// Writes a whole JSON document and a newline.
    func document(_ value: JSONValue) {
        out.line(value.rendered)
    }

    /// Reads the store's clock stand-in: the local clock (inspection reads; the store's own
    /// clock decides what is live).
    var now: Int64 { SystemDedupClock().nowMilliseconds() }
}
