// Logging and metrics: the application bootstraps both systems once; the library only logs to the
// logger it is given and records to the metrics factory it is given.

import CoreMetrics
import Dedup
import DedupSQLite
// snippet.hide
import Foundation
import Logging

let path = FileManager.default.temporaryDirectory.appendingPathComponent("observability-\(getpid()).sqlite").path
// snippet.show

// snippet.bootstrap
// In the application, once, before anything logs: swift-dedup never bootstraps either system.
LoggingSystem.bootstrap(StreamLogHandler.standardError)
// MetricsSystem.bootstrap(yourMetricsFactory)   // e.g. a Prometheus or StatsD backend

var logger = Logger(label: "billing")
logger.logLevel = .debug  // takeovers, keys in flight elsewhere, retried renewals
logger[metadataKey: "topic"] = "orders"  // carried by every line, with dedup.namespace and dedup.owner

let store = try SQLiteDedupStore(path: path, logger: logger)  // migrations applied, lock waits
let consumer = try IdempotentConsumer(store: store, namespace: "billing-consumer-group", logger: logger)
// snippet.end

// snippet.taskLocal
// Without a `logger:` argument, a consumer takes the task's logger when it is created.
let scoped = try withLogger(logger) { _ in
    try IdempotentConsumer(store: store, namespace: "billing-consumer-group")
}
// snippet.end

// snippet.hide
_ = try await consumer.process(key: "msg-1") { _ in }
_ = try await scoped.process(key: "msg-1") { _ in }
for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
