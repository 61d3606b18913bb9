import ArgumentParser
import Dedup

/// The exit codes of `dedup-inspect`, stable for scripts.
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// The command did what was asked (a dry run counts as success).
    case success = 0
    /// `show` or `forget` found no such record; `reset` matched no record (a mistyped namespace
    /// before a replay would otherwise go unnoticed); `replay` found no such stream or consumer
    /// group, or matched no record (and changed nothing).
    case notFound = 1
    /// Bad arguments or usage: unknown option, malformed or ambiguous time, invalid `--store` or
    /// cursor; a deletion refused for want of its confirmation flag (`reset --yes` over more than
    /// `--max-share` without `--all-matching`, `forget --yes` of a live lease without `--even-if-live`,
    /// `replay --yes` that would move a group forward without `--even-if-ahead`).
    case usage = 2
    /// The store cannot be reached, or did not answer in time.
    case storeUnreachable = 3
    /// Any other store error: refused credentials, corrupt or foreign data, read-only store.
    case storeError = 4
    /// The store's schema is not the one this tool expects: migrations pending (reported by `check`;
    /// every other command but `migrate` refuses such a file rather than migrate it), written by a
    /// newer swift-dedup, or an applied migration was altered.
    case schemaMismatch = 5
    /// `check` only: the store is reachable and works, but a setting can lose dedup records (a
    /// Redis whose eviction policy drops them, or that keeps nothing across a restart).
    case warnings = 6

    /// The code for a store error.
    public init(for error: DedupError) {
        switch error.code {
        case .invalidNamespace, .invalidKey, .missingKey, .invalidConfiguration:
            self = .usage
        case .storeUnavailable, .timeout, .busy:
            self = .storeUnreachable
        case .schemaTooNew, .schemaOutdated, .schemaAltered:
            self = .schemaMismatch
        default:
            self = .storeError
        }
    }

    /// The `ExitCode` to throw from a command.
    var exitCode: ExitCode { ExitCode(rawValue) }

    /// The table printed in `--help`.
    static let helpText = """
        EXIT CODES:
          0  success (a dry run included)
          1  not found: no such record (show, forget); nothing matched (reset, replay);
             no such stream or group (replay)
          2  bad arguments or usage, including an invalid --store, --stream or cursor; a
             deletion refused for want of --all-matching (reset, replay), --even-if-live
             (forget) or --even-if-ahead (replay)
          3  store unreachable: refused, down, missing file, timeout
          4  other store error: credentials refused, corrupt data, read-only
          5  schema mismatch: migrations pending, newer schema, altered migration
          6  check: reachable, but a setting can lose records (Redis eviction, no persistence)
        """
}
