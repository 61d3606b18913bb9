/// What one purge pass did: how many expired records it deleted, and the error that ended it early.
public struct PurgePass: Sendable, Hashable {
    /// Records deleted in this pass.
    public var deleted: Int
    /// The error that ended the pass early, if any.
    public var error: DedupError?

    /// Creates a pass report.
    public init(deleted: Int, error: DedupError?) {
        self.deleted = deleted
        self.error = error
    }
}

extension DedupStore {
    /// One purge pass: calls ``purgeExpired(limit:)`` with `batchSize` until a batch comes back
    /// short or the task is cancelled, so each batch is one short transaction or statement and
    /// consumers are not kept waiting.
    ///
    /// It never throws: a failure ends the pass, and the report carries it beside what was deleted
    /// before it (an error that is no ``DedupError`` becomes ``DedupError/Code/storeError`` keeping
    /// it as its ``DedupError/underlyingError``). The stores' purge services run it on an interval.
    public func purgeExpiredPass(batchSize: Int) async -> PurgePass {
        var deleted = 0
        do {
            while true {
                let count = try await purgeExpired(limit: batchSize)
                deleted += count
                if count < batchSize || Task.isCancelled { break }
            }
            return PurgePass(deleted: deleted, error: nil)
        } catch {
            let failure = error as? DedupError ?? DedupError(.storeError, "\(error)", underlyingError: error)
            return PurgePass(deleted: deleted, error: failure)
        }
    }
}
