import Dedup
import Synchronization

/// A clock that moves only when told to: for deterministic tests of leases and retention.
public final class ManualDedupClock: DedupClock {
    private let now: Mutex<Int64>

    /// Starts the clock at `milliseconds` since the Unix epoch (2023-11-14 by default).
    public init(startingAt milliseconds: Int64 = 1_700_000_000_000) {
        self.now = Mutex(milliseconds)
    }

    /// The clock's current time.
    public func nowMilliseconds() -> Int64 {
        now.withLock { $0 }
    }

    /// Moves the clock forward.
    public func advance(by duration: Duration) {
        now.withLock { $0 += duration.wholeMilliseconds }
    }

    /// Sets the clock to a time (it may move backwards, to test clock steps).
    public func set(milliseconds: Int64) {
        now.withLock { $0 = milliseconds }
    }
}
