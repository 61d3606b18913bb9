/// A small seeded random number generator (SplitMix64): the same seed gives the same numbers on
/// every run and platform, so a test, a simulation or a demo that fails can be run again exactly.
/// Not for anything secret.
///
/// ```swift
/// var random = SplitMix64(seed: 2026)
/// let order = keys.shuffled(using: &random)
/// ```
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// Creates a generator; equal seeds give equal sequences.
    public init(seed: UInt64) {
        state = seed
    }

    /// The next number of the sequence.
    public mutating func next() -> UInt64 {
        state &+= Self.increment
        return Self.mix(state)
    }

    /// The sequence's step (the golden ratio in 64 bits).
    static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// SplitMix64's output function: scrambles `value` into a well-spread 64-bit number.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
