// Opens a dedup store on a Redis Cluster: the URL names any node, and the store finds the others.
//
// The store connects on first use; its first call reads the slot map (CLUSTER SLOTS).

import Dedup
import DedupRedis
import Foundation

// snippet.url
// Any primary or replica of the cluster will do as a seed, and several, comma-separated, are asked
// in turn until one answers; database 0 only.
let url =
    ProcessInfo.processInfo.environment["DEDUP_REDIS_URL"]
    ?? "redis://127.0.0.1:31001,127.0.0.1:31002,127.0.0.1:31003"
let store = try RedisDedupStore(url: url)
let consumer = try IdempotentConsumer(store: store, namespace: "billing")
let outcome = try await consumer.process(key: "invoice-4711") { _ in
    // Charge the customer.
}
print(outcome, store.isCluster ? "on a cluster" : "on a single server")
// snippet.end
