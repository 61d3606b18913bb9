#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A reading of a monotonic clock that keeps counting while the machine sleeps, as a lease in the
/// store does (on Linux the one `ContinuousClock` reads, `CLOCK_BOOTTIME`), in whole nanoseconds.
///
/// The consumer takes several readings per message (the claim's start for the lease's local
/// deadline, the timers); `ContinuousClock.Instant` builds each from 128-bit `Duration` arithmetic,
/// and turning a difference back into nanoseconds divides a 128-bit number: together more than the
/// readings themselves. Plain integers cost neither.
package struct MonotonicInstant: Comparable, Sendable {
    /// Nanoseconds since an arbitrary start (the machine's boot).
    package let nanoseconds: Int64

    /// The clock's reading now: one `clock_gettime`, served without a system call by the vDSO.
    package static var now: MonotonicInstant {
        var time = timespec()
        #if os(Linux)
        clock_gettime(CLOCK_BOOTTIME, &time)
        #else
        clock_gettime(CLOCK_MONOTONIC, &time)
        #endif
        return MonotonicInstant(nanoseconds: Int64(time.tv_sec) &* 1_000_000_000 &+ Int64(time.tv_nsec))
    }

    /// This instant plus `duration` nanoseconds (a duration converted with
    /// ``Swift/Duration/saturatingNanoseconds``), saturating rather than wrapping.
    package func advanced(byNanoseconds duration: Int64) -> MonotonicInstant {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(duration)
        return MonotonicInstant(nanoseconds: overflow ? (duration < 0 ? Int64.min : Int64.max) : sum)
    }

    /// The nanoseconds from `earlier` to this instant, for a timer.
    package func nanoseconds(since earlier: MonotonicInstant) -> Int64 {
        nanoseconds &- earlier.nanoseconds
    }

    package static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }
}

extension Duration {
    /// The duration in nanoseconds, `Int64.max` for one longer than that holds (about 292 years):
    /// converted once, where a consumer is made, for ``MonotonicInstant`` arithmetic.
    var saturatingNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        let (sum, sumOverflow) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return sumOverflow ? (seconds < 0 ? Int64.min : Int64.max) : sum
    }
}
