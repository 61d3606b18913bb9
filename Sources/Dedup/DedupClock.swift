import Foundation

/// A wall clock in milliseconds since the Unix epoch: where a store reads "now" for leases and
/// retention. Tests pass a clock they move by hand; production uses ``SystemDedupClock``.
public protocol DedupClock: Sendable {
    /// Now, in milliseconds since 1970-01-01T00:00:00Z.
    func nowMilliseconds() -> Int64
}

/// The host's real-time clock.
public struct SystemDedupClock: DedupClock {
    /// Creates the system clock.
    public init() {}

    /// Now, from `clock_gettime(CLOCK_REALTIME)`.
    public func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

extension Date {
    /// The date at a number of milliseconds since the Unix epoch.
    public init(millisecondsSince1970 milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// Milliseconds since the Unix epoch, rounded to the nearest (so a date made from milliseconds
    /// gives them back exactly).
    public var millisecondsSince1970: Int64 {
        Int64((timeIntervalSince1970 * 1000).rounded())
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down, between 0 and 1,000 years: longer
    /// durations (such as `.seconds(.max)`, "forever") count as 1,000 years, so a store adding one to
    /// "now" can never overflow.
    public var wholeMilliseconds: Int64 {
        let limit: Int64 = 1000 * 366 * 86_400_000
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        guard seconds < limit / 1000 else { return limit }
        return min(limit, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}
