import Dedup
import Logging
import ServiceLifecycle

/// Deletes expired records of a ``PostgresDedupStore`` on an interval, as a ServiceLifecycle
/// service: add it to your `ServiceGroup` next to the consumer.
///
/// Each pass calls ``PostgresDedupStore/purgeExpired(limit:)`` until it deletes fewer than
/// `batchSize` records — one short statement per batch, skipping rows other transactions hold, so
/// consumers are not kept waiting — then sleeps for `interval`. Several processes may run it on
/// the same tables. A failed pass is logged and the next one runs on schedule: an expired record
/// that stays a little longer is harmless, since expired records count as absent everywhere. The
/// service returns when the group shuts down gracefully or its task is cancelled.
public struct PostgresPurgeService: Service {
    /// What one pass did, for the `onPass` observer (tests, metrics).
    public typealias Pass = PurgePass

    private let store: PostgresDedupStore
    private let interval: Duration
    private let batchSize: Int
    private let logger: Logger
    private let onPass: (@Sendable (Pass) -> Void)?

    /// Creates the service.
    ///
    /// - Parameters:
    ///   - store: the store to purge.
    ///   - interval: the pause between passes (default 60 s). The first pass runs at start.
    ///   - batchSize: records deleted per statement (default 1000).
    ///   - logger: where a failed pass is logged (the service has no caller to throw to); the
    ///     task's `Logger.current` when `nil`.
    ///   - onPass: called after every pass.
    public init(
        store: PostgresDedupStore,
        interval: Duration = .seconds(60),
        batchSize: Int = 1000,
        logger: Logger? = nil,
        onPass: (@Sendable (Pass) -> Void)? = nil
    ) {
        self.store = store
        self.interval = interval
        self.batchSize = max(1, batchSize)
        self.logger = logger ?? Logger.current
        self.onPass = onPass
    }

    /// Purges, then sleeps, until graceful shutdown or cancellation.
    public func run() async throws {
        // The sleep is what a shutdown interrupts; a pass in progress finishes its statement.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let pass = await purgeOnce()
                onPass?(pass)
                try await Task.sleep(for: interval)
            }
        }
    }

    /// One pass: purges in batches until a batch comes back short (``/Dedup/DedupStore/purgeExpiredPass(batchSize:)``),
    /// and logs what it did.
    public func purgeOnce() async -> Pass {
        let pass = await store.purgeExpiredPass(batchSize: batchSize)
        if let failure = pass.error {
            logger.error(
                "purging expired dedup records failed",
                metadata: [
                    "error": "\(failure)", "deleted": "\(pass.deleted)", "schema": "\(store.configuration.schema)",
                ]
            )
        } else if pass.deleted > 0 {
            logger.debug(
                "purged expired dedup records",
                metadata: ["deleted": "\(pass.deleted)", "schema": "\(store.configuration.schema)"]
            )
        }
        return pass
    }
}
