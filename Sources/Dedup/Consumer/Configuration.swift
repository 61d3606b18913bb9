/// What the consumer does when another consumer holds a live lease on the key.
public enum InFlightPolicy: Hashable, Sendable {
    /// Return ``ProcessOutcome/deferred(retryAfter:)`` at once: the caller nacks or schedules a
    /// retry (like RocketMQ's `RECONSUME_LATER`). The default.
    case `defer`
    /// Poll with backoff until the holder completes (outcome ``ProcessOutcome/duplicate(_:)``) or its
    /// lease passes (take over and run), giving up after `timeout` with
    /// ``ProcessOutcome/deferred(retryAfter:)``.
    case wait(timeout: Duration)
}

/// What the consumer does when the store cannot be reached.
public enum StoreFailurePolicy: Hashable, Sendable {
    /// Throw the store's error (``DedupError/Code/storeUnavailable`` or ``DedupError/Code/timeout``):
    /// the message is not acked and nothing is lost. The default.
    case failClosed
    /// Run the handler without dedup (outcome ``ProcessOutcome/bypassed(_:)``), logged and counted.
    /// Only for handlers whose effects are harmless to repeat.
    case failOpen
}

/// What the consumer does when the key strategy finds no key in a message.
public enum MissingKeyPolicy: Hashable, Sendable {
    /// Throw ``DedupError/Code/missingKey``. The default.
    case reject
    /// Run the handler without dedup (outcome ``ProcessOutcome/bypassed(_:)``).
    case bypass
}

/// The bounded local cache of keys this process has seen completed.
public struct LocalCacheConfiguration: Hashable, Sendable {
    /// The most keys kept; the least recently used go first.
    public var capacity: Int
    /// How long an entry is trusted: short, so an operator's `reset` is honoured quickly.
    public var timeToLive: Duration

    /// Creates a cache configuration (defaults: 10,000 keys for 30 seconds).
    public init(capacity: Int = 10_000, timeToLive: Duration = .seconds(30)) {
        self.capacity = capacity
        self.timeToLive = timeToLive
    }
}

/// How an ``IdempotentConsumer`` behaves. Each property says its default.
public struct ConsumerConfiguration: Sendable {
    /// How long a claim holds the key before another consumer may take it over. Default 30 s.
    public var lease: Duration = .seconds(30)
    /// How often the lease is renewed while the handler runs; `nil` turns renewal off.
    /// Default 10 s (a third of the lease).
    public var renewalInterval: Duration? = .seconds(10)
    /// How long a completed key is remembered (duplicates skipped). Default 24 h.
    public var retention: Duration = .seconds(24 * 3600)
    /// What to do when the key is in flight elsewhere. Default ``InFlightPolicy/defer``.
    public var inFlightPolicy: InFlightPolicy = .defer
    /// What to do when the store is unreachable. Default ``StoreFailurePolicy/failClosed``.
    public var storeFailurePolicy: StoreFailurePolicy = .failClosed
    /// What to do when a message has no key. Default ``MissingKeyPolicy/reject``.
    public var missingKeyPolicy: MissingKeyPolicy = .reject
    /// The local cache of completed keys; `nil` (the default) turns it off.
    public var localCache: LocalCacheConfiguration? = nil
    /// Limits on keys (the key length can be lowered from 512 bytes).
    public var identityLimits: IdentityLimits = .default
    /// The largest handler result kept for duplicates, in bytes; larger results are not stored
    /// (logged and counted). Default 64 KiB.
    public var maximumResultBytes: Int = 64 * 1024
    /// How many times a completion that failed for a store error is tried in all. Default 4.
    public var completionAttempts: Int = 4
    /// The first wait between completion attempts; it doubles each time. Default 50 ms.
    public var completionBackoff: Duration = .milliseconds(50)
    /// The shortest `retryAfter` a deferred outcome suggests. Default 100 ms.
    public var minimumRetryDelay: Duration = .milliseconds(100)
    /// Who this consumer is, for operators (a pod name, say): kept on the records it holds in
    /// flight, shown by `dedup-inspect` beside the owner token, and carried by the consumer's log
    /// lines as `dedup.owner`. 1 to 128 UTF-8 bytes, any characters. Default `host:pid`
    /// (``ClaimRequest/defaultOwnerLabel``).
    public var ownerLabel: String = ClaimRequest.defaultOwnerLabel

    /// The defaults.
    public init() {}

    /// Checks the values against each other.
    func validated() throws(DedupError) -> ConsumerConfiguration {
        guard lease > .zero else {
            throw DedupError(.invalidConfiguration, "the lease must be longer than zero")
        }
        guard retention > .zero else {
            throw DedupError(.invalidConfiguration, "the retention must be longer than zero")
        }
        if let renewalInterval, renewalInterval <= .zero || renewalInterval >= lease {
            throw DedupError(
                .invalidConfiguration,
                "the renewal interval (\(renewalInterval)) must be longer than zero and shorter than the lease (\(lease))"
            )
        }
        guard completionAttempts >= 1 else {
            throw DedupError(.invalidConfiguration, "completionAttempts must be at least 1")
        }
        try ClaimRequest.validate(ownerLabel: ownerLabel)
        if let localCache, localCache.capacity < 1 || localCache.timeToLive <= .zero {
            throw DedupError(.invalidConfiguration, "the local cache needs a capacity and a time to live above zero")
        }
        return self
    }
}
