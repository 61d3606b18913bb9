import Foundation

/// Why a handler ran without dedup.
public enum BypassReason: String, Hashable, Sendable {
    /// The store was unreachable and the policy is ``StoreFailurePolicy/failOpen``.
    case storeUnavailable = "store_unavailable"
    /// The message had no key and the policy is ``MissingKeyPolicy/bypass``.
    case missingKey = "missing_key"
}

/// What happened to one message. Every case but ``deferred(retryAfter:)`` means: ack the message.
public enum ProcessOutcome: Hashable, Sendable {
    /// The handler ran and its success is recorded.
    case applied
    /// The key was already completed: the handler did not run. The record carries the stored result.
    case duplicate(DedupRecord)
    /// Another consumer is processing the key: do not ack; redeliver after about `retryAfter`.
    case deferred(retryAfter: Duration)
    /// The handler ran without dedup, for the reason given.
    case bypassed(BypassReason)

    /// `true` when the caller should ack the message.
    public var shouldAck: Bool {
        if case .deferred = self { return false }
        return true
    }
}

/// The outcome of a handler that returns a value, with the value: the handler's own when it ran,
/// the stored one decoded when the message was a duplicate.
public struct ProcessResult<Value: Sendable>: Sendable {
    /// What happened.
    public var outcome: ProcessOutcome
    /// The handler's value, or the stored value of a duplicate (`nil` if none was stored).
    public var value: Value?

    /// Creates a result.
    public init(outcome: ProcessOutcome, value: Value?) {
        self.outcome = outcome
        self.value = value
    }
}

extension ProcessResult: Equatable where Value: Equatable {}
