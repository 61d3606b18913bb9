import Foundation

// The store's configuration and its reconnect policy.
extension RedisDedupStore {
    /// How the store connects and names its keys.
    public struct Configuration: Sendable {
        /// How long connecting may take (TCP or Unix socket connect). Default 2 s.
        public var connectTimeout: Duration
        /// How long a command's reply may take; past it the call throws
        /// ``/Dedup/DedupError/Code/timeout`` and the connection is replaced. Default 2 s.
        public var commandTimeout: Duration
        /// How many connections (each with its own I/O thread). Default 2: Redis executes commands
        /// on one thread, and concurrent calls on one connection are pipelined, so more connections
        /// mostly add threads. Calls fill the first connection (up to 16 in progress) before the
        /// next is used: callers sharing a connection share its round trips, and the server reads
        /// once for all of them.
        public var poolSize: Int
        /// The first part of every key (`<keyPrefix>:<namespace length>:<namespace>:<key>`).
        /// Default `dedup`.
        public var keyPrefix: String
        /// How to reconnect after a connection fails.
        public var reconnect: ReconnectPolicy
        /// Whether a call made while no other call of this store is in progress does its round trip
        /// on the calling thread (bounded by ``commandTimeout``) rather than through a connection's
        /// I/O thread. Default `true`: the handoff to and from the I/O thread costs about as much as
        /// a loopback round trip, and with the store otherwise idle at most one cooperative thread
        /// waits, briefly. Concurrent calls always go through the I/O threads.
        public var runsIdleCallsInline: Bool
        /// Whether a batch of completions runs the completion script once for all its keys (up to
        /// ``RedisDedupStore/maximumKeysPerCompletion`` per call) rather than once per key. Default
        /// `true`: the script's fixed cost is most of a completion's cost on the server. On a Redis
        /// Cluster the store reaches itself, a call takes the keys of one primary, in any of its
        /// slots (see <doc:RedisCluster>). Set it to `false` behind a Redis Cluster proxy, or
        /// anything else that refuses a script whose keys are in different hash slots (`CROSSSLOT`); each
        /// completion then takes a call of its own, all still pipelined in one round trip.
        public var completesBatchesInOneScript: Bool

        /// Creates a configuration; every argument has the documented default.
        public init(
            connectTimeout: Duration = .seconds(2),
            commandTimeout: Duration = .seconds(2),
            poolSize: Int = 2,
            keyPrefix: String = "dedup",
            reconnect: ReconnectPolicy = ReconnectPolicy(),
            runsIdleCallsInline: Bool = true,
            completesBatchesInOneScript: Bool = true
        ) {
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.poolSize = poolSize
            self.keyPrefix = keyPrefix
            self.reconnect = reconnect
            self.runsIdleCallsInline = runsIdleCallsInline
            self.completesBatchesInOneScript = completesBatchesInOneScript
        }
    }

    /// How a connection is re-established: up to ``maximumAttempts`` connects per call, waiting
    /// ``initialBackoff``, then twice as long each time up to ``maximumBackoff``, between them. A call
    /// that finds the server down therefore fails after the attempts (with
    /// ``/Dedup/DedupError/Code/storeUnavailable``); the next call tries again.
    public struct ReconnectPolicy: Sendable {
        /// Connects tried per call before it fails. Default 3.
        public var maximumAttempts: Int
        /// The wait before the second attempt. Default 50 ms.
        public var initialBackoff: Duration
        /// The longest wait between attempts. Default 1 s.
        public var maximumBackoff: Duration

        /// Creates a policy.
        public init(
            maximumAttempts: Int = 3,
            initialBackoff: Duration = .milliseconds(50),
            maximumBackoff: Duration = .seconds(1)
        ) {
            self.maximumAttempts = maximumAttempts
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
        }
    }
}
