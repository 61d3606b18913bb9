// Runs a Redis Streams consumer group as a ServiceLifecycle service: every entry goes through an
// IdempotentConsumer and is acked (XACK) only once its dedup record is completed.

import Dedup
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import Foundation
import Logging
import ServiceLifecycle

// snippet.hide
struct InvalidOrder: Error {
    let entry: StreamEntryID
}

func charge(orderID: String, cents: Int64, fencingToken: Int64) async throws {}
// snippet.show

// snippet.options
func ordersConfiguration() -> RedisStreamConsumer.Configuration {
    var configuration = RedisStreamConsumer.Configuration(stream: "orders", group: "billing")
    configuration.keyStrategy = .field("order-id")  // default .entryID: the entry's ID
    configuration.startPosition = .timestamp(Date(timeIntervalSince1970: 1_795_132_800))  // a new group only
    configuration.processingMode = .batch  // one claim and one XACK per read
    configuration.readCount = 100  // entries per XREADGROUP
    configuration.reclaimIdleTime = .seconds(90)  // XAUTOCLAIM after this; must exceed the lease
    configuration.maxDeliveries = 16  // the 16th failed delivery goes to the dead-letter stream
    configuration.deadLetterStream = "orders:dead"  // the default: "<stream>:dead"
    return configuration
}
// snippet.end

// snippet.transactional
/// A consumer whose effect commits with its completion in the SQLite dedup file.
func transactionalOrders(url: String, store: SQLiteDedupStore) throws -> RedisStreamConsumer {
    let dedup = try IdempotentConsumer(store: store, namespace: "billing")
    let configuration = RedisStreamConsumer.Configuration(stream: "orders", group: "billing")
    return try RedisStreamConsumer(url: url, configuration: configuration, consumer: dedup) { entry in
        guard let orderID = entry["order-id"], let cents = entry["cents"].flatMap({ Int64($0) }) else {
            throw InvalidOrder(entry: entry.id)  // counts toward maxDeliveries, then dead-lettered
        }
        return try await dedup.processInTransaction(key: orderID, brokerTime: entry.id.brokerTime) {
            transaction,
            context in
            try transaction.execute(
                "INSERT INTO ledger (order_id, cents, fencing) VALUES (?, ?, ?)",
                .text(orderID),
                .integer(cents),
                .integer(context.fencingToken)
            )
        }
    }
}
// snippet.end

// snippet.service
let logger = Logger(label: "billing")
let redisURL = "redis://10.0.0.5:6379"
let dedup = try IdempotentConsumer(store: RedisDedupStore(url: redisURL), namespace: "billing")
var configuration = RedisStreamConsumer.Configuration(stream: "orders", group: "billing")
configuration.keyStrategy = .field("order-id")  // a producer's retry publishes one order twice
let orders = try RedisStreamConsumer(url: redisURL, configuration: configuration, consumer: dedup, logger: logger) {
    entry,
    context in
    guard let orderID = entry["order-id"], let cents = entry["cents"].flatMap({ Int64($0) }) else {
        throw InvalidOrder(entry: entry.id)  // counts toward maxDeliveries, then dead-lettered
    }
    try await charge(orderID: orderID, cents: cents, fencingToken: context.fencingToken)
}
try await ServiceGroup(services: [orders], gracefulShutdownSignals: [.sigterm], logger: logger).run()
// snippet.end
