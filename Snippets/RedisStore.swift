// Opens a dedup store on a Redis server that every host of a consumer group shares, and reads the
// server's persistence and eviction settings, which decide whether completed records survive.
//
// The store connects on first use; leases and retention run on the server's clock.

import Dedup
import DedupRedis
import Foundation
import Logging

let logger = Logger(label: "billing")

// snippet.url
// redis://[user:password@]host[:port][/db] or unix://[user:password@]/path/to/redis.sock[?db=N]
let url = ProcessInfo.processInfo.environment["DEDUP_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
let store = try RedisDedupStore(url: url)
let consumer = try IdempotentConsumer(store: store, namespace: "billing")
// snippet.end

// snippet.configured
var configuration = RedisDedupStore.Configuration()
configuration.keyPrefix = "billing-dedup"  // keys are billing-dedup:<n>:<namespace>:<key>
configuration.commandTimeout = .milliseconds(500)  // a later reply throws DedupError .timeout
configuration.reconnect = .init(maximumAttempts: 5, maximumBackoff: .seconds(2))
let endpoint = RedisEndpoint(
    transport: .unixSocket(path: "/run/redis/redis.sock"),
    username: "billing",
    password: ProcessInfo.processInfo.environment["REDIS_PASSWORD"],
    database: 2
)
let socketStore = try RedisDedupStore(endpoint: endpoint, configuration: configuration, logger: logger)
logger.info("dedup records on \(endpoint)")  // unix://billing:***@/run/redis/redis.sock?db=2
// snippet.end

// snippet.settings
let settings = try await store.serverSettings()
if settings.evictsRecords == true {
    logger.warning("maxmemory-policy \(settings.evictionPolicy ?? "?") may evict dedup records")
}
if settings.survivesRestart == false {
    logger.warning("neither AOF nor RDB snapshots: a Redis restart loses every dedup record")
}
// snippet.end

// snippet.executor
// Eight consumer tasks on the thread of the store's first connection: a round trip's replies
// resume them without a thread hop, and their next commands share the next round trip.
let orders = (1...800).map { "order-\($0)" }
try await withThrowingTaskGroup(of: Void.self) { group in
    for task in 0..<8 {
        group.addTask(executorPreference: store.taskExecutor) {
            for index in stride(from: task, to: orders.count, by: 8) {
                _ = try await consumer.process(key: orders[index]) { _ in
                    // Await I/O here; never block this thread or compute for long.
                }
            }
        }
    }
    try await group.waitForAll()
}
// snippet.end
