import Dedup
import DedupRedis
import DedupRedisStreams
import Foundation
import Testing

/// Reclaims seen by a handler that outlasts the reclaim idle time: the test waits on Redis's idle
/// clock, so it runs with the other real-time suites, not beside the whole suite.
@Suite("Redis stream consumer: reclaims of a running entry", .timeLimit(.minutes(2)))
struct StreamReclaimTimingTests {
    @Test(
        "an entry still running here when it turns idle is not counted as delivered again, so it is dead-lettered only after maxDeliveries runs"
    )
    func slowHandlerIsNotCountedByReclaims() async throws {
        try await StreamBed.with { bed in
            let poison = try await bed.add(["order": "slow-poison"])
            let ledger = Ledger()
            let consumer = try RedisStreamConsumer(
                url: bed.server.url,
                configuration: bed.configuration {
                    $0.maxDeliveries = 2
                    $0.reclaimIdleTime = .milliseconds(2500)
                    $0.reclaimInterval = .milliseconds(50)
                },
                consumer: bed.makeDedup(lease: .seconds(2), renewal: .milliseconds(200)),
                logger: quietLogger
            ) { entry, _ in
                ledger.record(entry.id.description)
                guard ledger.count(poison) == 1 else { throw AckAndReclaimTests.HandlerFailure() }
                // The first run outlasts the idle time twice: each time the reclaim scan passes
                // over the entry, Redis's idle time starts again from zero.
                var reclaims = 0
                var lastIdle = 0
                while reclaims < 2 {
                    let idle =
                        Int(
                            try await bed.server.cli("XPENDING", bed.stream, bed.group, "-", "+", "1").split(
                                separator: "\n"
                            )[2]
                        ) ?? 0
                    if idle < lastIdle { reclaims += 1 }
                    lastIdle = idle
                    try await Task.sleep(for: .milliseconds(20))
                }
                throw AckAndReclaimTests.HandlerFailure()
            }
            try await whileRunning([consumer]) { _ in
                try await waitUntil("the entry is dead-lettered") {
                    try await bed.server.cli("XLEN", "orders:dead") == "1"
                }
            }
            // Before, every reclaim of the running entry counted a delivery: it was dead-lettered
            // after its first run.
            #expect(ledger.count(poison) == 2)
        }
    }
}
