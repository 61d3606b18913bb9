import Dedup
import DedupRedis
import Foundation

extension RedisStreamConsumer {
    /// Where a group created by the consumer starts reading (an existing group keeps its position).
    public enum StartPosition: Hashable, Sendable {
        /// Every entry the stream holds (`XGROUP CREATE … 0`).
        case beginning
        /// Only entries added after the group is created (`XGROUP CREATE … $`).
        case latest
        /// Entries added at this broker time or later, the entry at the time itself included:
        /// RocketMQ's `CONSUME_FROM_TIMESTAMP`. The group is created at the ID just before
        /// (``StreamEntryID/justBefore(_:)``).
        case timestamp(Date)

        /// The ID `XGROUP CREATE` gets.
        var groupID: String {
            switch self {
            case .beginning: return "0"
            case .latest: return "$"
            case .timestamp(let date): return StreamEntryID.justBefore(date).description
            }
        }
    }

    /// How the entries of one read go through the ``/Dedup/IdempotentConsumer``.
    public enum ProcessingMode: Hashable, Sendable {
        /// Each entry on its own (``/Dedup/IdempotentConsumer/process(_:keyStrategy:fingerprint:brokerTime:_:)``),
        /// up to ``Configuration/entriesInFlight`` at once, each acked as soon as it completes.
        case oneByOne
        /// The entries of one read together
        /// (``/Dedup/IdempotentConsumer/processBatch(_:keyStrategy:fingerprint:brokerTime:_:)``): one store
        /// call claims them, handlers run one after another, one `XACK` acks the completed ones.
        case batch
    }

    /// What the consumer reads and how.
    public struct Configuration: Sendable {
        /// The stream's key.
        public var stream: String
        /// The consumer group.
        public var group: String
        /// This consumer's name in the group. Default ``/Dedup/ClaimRequest/defaultOwnerLabel``
        /// (`host:pid`). A consumer that comes back under the same name first processes the
        /// entries it had read but not acked.
        public var consumerName: String
        /// Where a group this consumer creates starts. Default ``StartPosition/beginning``.
        public var startPosition: StartPosition
        /// How entries go through the dedup consumer. Default ``ProcessingMode/oneByOne``.
        public var processingMode: ProcessingMode
        /// The most entries being processed at once (reading pauses at the limit). Default 16. In
        /// ``ProcessingMode/batch`` mode at least ``readCount``: a whole read is one batch.
        public var entriesInFlight: Int
        /// The most entries one read (`COUNT`) or reclaim asks for. Default 100.
        public var readCount: Int
        /// How long a read waits for new entries (`BLOCK`), which is also how long a graceful
        /// shutdown may wait for the read in progress. Default 2 s.
        public var blockTimeout: Duration
        /// How long an entry must have been pending, unacked, before another consumer takes it
        /// over with `XAUTOCLAIM` (its holder died, or failed it). Must exceed the dedup
        /// consumer's lease, so an entry whose handler still runs is not taken from it. Default:
        /// twice the lease.
        public var reclaimIdleTime: Duration?
        /// How often the pending list is scanned for entries to reclaim (each scan continues
        /// where the last call stopped, until it has gone through the list). Default 5 s.
        public var reclaimInterval: Duration
        /// How often the group's lag (`XINFO GROUPS`) is read for the lag gauge, at most, after a
        /// read that returned entries and at each reclaim scan. Default 1 s.
        public var lagInterval: Duration
        /// After how many deliveries (the pending list's delivery count) an entry whose
        /// processing failed goes to the dead-letter stream instead of waiting for another.
        /// Default 16, as RocketMQ.
        public var maxDeliveries: Int
        /// Where failed entries go. Default `<stream>:dead`.
        public var deadLetterStream: String?
        /// How an entry's dedup key is found. Default ``Dedup/KeyStrategy/entryID``; use
        /// ``Dedup/KeyStrategy/field(_:)`` when producers may publish the same event twice.
        public var keyStrategy: KeyStrategy<StreamEntry>
        /// How long connecting may take. Default 2 s.
        public var connectTimeout: Duration
        /// How long a command other than a blocking read may take. Default 2 s.
        public var commandTimeout: Duration
        /// How a lost connection is made again within one call.
        public var reconnect: RedisDedupStore.ReconnectPolicy
        /// The first wait before reading again after Redis could not be reached; it doubles up to
        /// ``maximumRetryBackoff``. Default 100 ms.
        public var retryBackoff: Duration
        /// The longest wait between attempts to reach Redis again. Default 2 s.
        public var maximumRetryBackoff: Duration

        /// Creates a configuration; every other setting has the documented default.
        public init(stream: String, group: String) {
            self.stream = stream
            self.group = group
            self.consumerName = ClaimRequest.defaultOwnerLabel
            self.startPosition = .beginning
            self.processingMode = .oneByOne
            self.entriesInFlight = 16
            self.readCount = 100
            self.blockTimeout = .seconds(2)
            self.reclaimIdleTime = nil
            self.reclaimInterval = .seconds(5)
            self.lagInterval = .seconds(1)
            self.maxDeliveries = 16
            self.deadLetterStream = nil
            self.keyStrategy = .entryID
            self.connectTimeout = .seconds(2)
            self.commandTimeout = .seconds(2)
            self.reconnect = RedisDedupStore.ReconnectPolicy()
            self.retryBackoff = .milliseconds(100)
            self.maximumRetryBackoff = .seconds(2)
        }

        /// The dead-letter stream's key.
        var deadLetterStreamKey: String { deadLetterStream ?? "\(stream):dead" }

        /// The settings checked against the dedup consumer's lease, ``reclaimIdleTime`` filled in.
        func validated(lease: Duration) throws(DedupError) -> Configuration {
            func invalid(_ why: String) -> DedupError {
                DedupError(.invalidConfiguration, "Redis stream consumer configuration: \(why)")
            }
            guard !stream.isEmpty else { throw invalid("the stream key is empty") }
            guard !group.isEmpty else { throw invalid("the group name is empty") }
            guard !consumerName.isEmpty else { throw invalid("the consumer name is empty") }
            guard deadLetterStreamKey != stream, !deadLetterStreamKey.isEmpty else {
                throw invalid("the dead-letter stream must be another, non-empty key")
            }
            guard entriesInFlight >= 1 else {
                throw invalid("entriesInFlight must be at least 1, not \(entriesInFlight)")
            }
            guard readCount >= 1 else { throw invalid("readCount must be at least 1, not \(readCount)") }
            guard blockTimeout >= .milliseconds(1) else { throw invalid("blockTimeout must be at least 1 ms") }
            guard maxDeliveries >= 1 else { throw invalid("maxDeliveries must be at least 1, not \(maxDeliveries)") }
            guard reclaimInterval > .zero, lagInterval >= .zero else {
                throw invalid("reclaimInterval must be positive and lagInterval not negative")
            }
            guard connectTimeout > .zero, commandTimeout > .zero else { throw invalid("timeouts must be positive") }
            guard retryBackoff > .zero, maximumRetryBackoff >= retryBackoff else {
                throw invalid("retryBackoff must be positive and at most maximumRetryBackoff")
            }
            guard reconnect.maximumAttempts >= 1 else { throw invalid("reconnect.maximumAttempts must be at least 1") }
            let idle = reclaimIdleTime ?? lease * 2
            guard idle > lease else {
                throw invalid(
                    "reclaimIdleTime (\(idle)) must exceed the dedup consumer's lease (\(lease)), or entries still being handled are taken over"
                )
            }
            if case .timestamp(let date) = startPosition, date.timeIntervalSince1970 < 0 {
                throw invalid("the start timestamp is before 1970")
            }
            var validated = self
            validated.reclaimIdleTime = idle
            return validated
        }
    }
}
