// A consumer configured away from the defaults, with its own logger and metrics factory.

import CoreMetrics
import Dedup
import DedupSQLite
// snippet.hide
import Foundation
import Logging

let path = FileManager.default.temporaryDirectory.appendingPathComponent("configuration-\(getpid()).sqlite").path
let store = try SQLiteDedupStore(path: path, logger: Logger(label: "billing.dedup"))
// snippet.show

// snippet.configuration
var configuration = ConsumerConfiguration()
configuration.lease = .seconds(60)  // a claim's hold on the key; default 30 s
configuration.renewalInterval = .seconds(20)  // must be shorter than the lease; default 10 s
configuration.retention = .seconds(7 * 86_400)  // how long a completed key is remembered; default 24 h
configuration.inFlightPolicy = .wait(timeout: .seconds(5))  // default .defer
configuration.storeFailurePolicy = .failClosed  // the default: a store outage throws
configuration.missingKeyPolicy = .reject  // the default: a message without a key throws
configuration.localCache = LocalCacheConfiguration(capacity: 50_000, timeToLive: .seconds(10))
configuration.ownerLabel = "billing-worker-7"  // shown by dedup-inspect; default host:pid

var logger = Logger(label: "billing.dedup")
logger.logLevel = .debug  // takeovers and keys in flight elsewhere are logged at debug

let consumer = try IdempotentConsumer(
    store: store,
    namespace: "billing-consumer-group",
    configuration: configuration,
    logger: logger,  // default: Logger.current
    metricsFactory: MetricsSystem.factory  // default: the bootstrapped MetricsSystem
)
// snippet.end

// snippet.hide
do {
    var tooLong = configuration
    tooLong.renewalInterval = .seconds(60)
    _ = try IdempotentConsumer(store: store, namespace: "billing-consumer-group", configuration: tooLong)
    fatalError("a renewal interval as long as the lease must be refused")
} catch {
    print(error)  // invalidConfiguration: the renewal interval (60.0 seconds) must be … shorter than the lease
}
_ = consumer
for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
