import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Random bits for owner tokens, drawn from the operating system 256 bytes at a time.
///
/// Every claim needs a fresh token, and `SystemRandomNumberGenerator` makes one system call per
/// 64 bits: two calls per token cost about as much as the rest of the consumer's work per message.
/// One `getentropy` call here serves 16 tokens. A forked child must not hand out the parent's
/// remaining bytes, so a fork empties the pool.
enum OwnerTokenSource {
    private struct Pool {
        var words: [UInt64] = Array(repeating: 0, count: 32)
        var next = 32
        var forkGeneration: UInt64 = 0
    }

    private static let pool = Mutex(Pool())
    private static let forks = Atomic<UInt64>(0)
    private static let watchForks: Void = {
        _ = pthread_atfork(nil, nil, { OwnerTokenSource.forks.add(1, ordering: .relaxed) })
    }()

    /// 128 random bits.
    static func next() -> (UInt64, UInt64) {
        _ = watchForks
        let generation = forks.load(ordering: .relaxed)
        return pool.withLock { pool in
            if pool.next + 2 > pool.words.count || pool.forkGeneration != generation {
                refill(&pool.words)
                pool.next = 0
                pool.forkGeneration = generation
            }
            let high = pool.words[pool.next]
            let low = pool.words[pool.next + 1]
            // Used bits leave the pool.
            pool.words[pool.next] = 0
            pool.words[pool.next + 1] = 0
            pool.next += 2
            return (high, low)
        }
    }

    private static func refill(_ words: inout [UInt64]) {
        let filled = words.withUnsafeMutableBytes { getentropy($0.baseAddress, $0.count) == 0 }
        if !filled {
            var generator = SystemRandomNumberGenerator()
            for index in words.indices { words[index] = generator.next() }
        }
    }

    /// 32 lowercase hexadecimal digits of two 64-bit words, high first.
    static func hex(_ high: UInt64, _ low: UInt64) -> String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            for index in 0..<16 {
                let shift = UInt64(60 - 4 * index)
                buffer[index] = digit(high >> shift)
                buffer[16 + index] = digit(low >> shift)
            }
            return 32
        }
    }

    @inline(__always)
    private static func digit(_ value: UInt64) -> UInt8 {
        let nibble = UInt8(truncatingIfNeeded: value & 0xF)
        return nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
    }
}
