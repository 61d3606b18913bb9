// The stream rows: a Redis stream consumed through RedisStreamConsumer with dedup, against
// Benchmarks/Ceilings/stream_ceiling.c (plain XREADGROUP COUNT 100 + XACK, no dedup) on the same
// server.
import Dedup
import DedupRedis
import DedupRedisStreams
import Foundation
import Logging
import Synchronization

/// Benchmarks/Ceilings/stream_ceiling.c, compiled by ``CPrograms``.
struct StreamCeiling {
    let executable: String

    init(programs: CPrograms) throws {
        executable = try programs.executable(source: "Benchmarks/Ceilings/stream_ceiling.c", library: "hiredis")
    }

    /// One pass over `n` entries; prints `stream batch=100 pass=unique n=.. msgs_per_s=..`.
    func run(host: String, port: Int, n: Int) throws -> String {
        try runProgram(executable, [host, "\(port)", "\(n)"])
    }
}

/// Which store keeps the dedup records while a stream is consumed.
enum StreamStore: String {
    case sqlite, redis
}

/// Fills `stream` with `count` entries shaped as the ceiling's: a field `id` holding `m-<i>` (the
/// dedup key) and a one-byte `payload`; a thousand `XADD`s a round trip.
func fillStream(_ endpoint: RedisEndpoint, stream: String, count: Int, logger: Logger) async throws {
    let connection = RedisConnection(
        settings: ConnectionSettings(
            endpoint: endpoint,
            connectTimeout: .seconds(2),
            commandTimeout: .seconds(30),
            reconnect: RedisDedupStore.ReconnectPolicy(),
            logger: logger
        ),
        index: 0
    )
    do {
        var next = 0
        while next < count {
            let end = min(count, next + 1000)
            let commands = (next..<end).map { RedisCommand("XADD", stream, "*", "id", "m-\($0)", "payload", "x") }
            for reply in try await connection.execute(commands) {
                if case .error(let message) = reply { throw BenchError("XADD failed: \(message)") }
            }
            next = end
        }
    } catch {
        await connection.close()
        throw error
    }
    await connection.close()
}

/// Consumes `count` entries of `stream` (filled beforehand) through a `RedisStreamConsumer` in
/// `mode`, timed from the runner's start until the last entry is acked; every entry must be
/// applied and acked.
func measureStream(
    _ endpoint: RedisEndpoint,
    stream: String,
    consumer: IdempotentConsumer,
    mode: RedisStreamConsumer.ProcessingMode,
    count: Int,
    logger: Logger
) async throws -> Measurement {
    let tally = StreamTally(expected: count)
    var configuration = RedisStreamConsumer.Configuration(stream: stream, group: "bench")
    configuration.processingMode = mode
    configuration.keyStrategy = .field("id")
    configuration.readCount = 100
    let runner = try RedisStreamConsumer(
        endpoint: endpoint,
        configuration: configuration,
        consumer: consumer,
        logger: logger,
        onSettled: { tally.settle($0) }
    ) { _, _ in }
    let started = ContinuousClock.now
    let running = Task { try await runner.run() }
    let outcome = await tally.finished()
    let elapsed = ContinuousClock.now - started
    running.cancel()
    _ = try? await running.value
    if let failure = outcome { throw BenchError("stream pass: \(failure)") }
    return Measurement(
        messages: count,
        seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    )
}

/// Counts settled entries and wakes the pass when all are acked, or at the first that is not.
private final class StreamTally: Sendable {
    private struct State {
        var acked = 0
        var failure: String?
        var waiter: CheckedContinuation<String?, Never>?
        var done = false
    }
    private let expected: Int
    private let state = Mutex(State())

    init(expected: Int) { self.expected = expected }

    func settle(_ settlement: RedisStreamConsumer.Settlement) {
        let waiter = state.withLock { state -> CheckedContinuation<String?, Never>? in
            guard !state.done else { return nil }
            if settlement.action == .acked, case .success(.applied) = settlement.outcome {
                state.acked += 1
            } else {
                state.failure = "entry \(settlement.entryID): \(settlement.outcome), \(settlement.action)"
            }
            guard state.acked == expected || state.failure != nil else { return nil }
            state.done = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: state.withLock { $0.failure })
    }

    func finished() async -> String? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.done { return true }
                state.waiter = continuation
                return false
            }
            if ready { continuation.resume(returning: state.withLock { $0.failure }) }
        }
    }
}
