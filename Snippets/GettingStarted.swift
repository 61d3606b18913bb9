// A consumer on SQLite: every message goes through `process(key:)`, and its outcome says whether
// to ack it.

import Dedup
import DedupSQLite
// snippet.hide
import Foundation

/// What the broker client hands over: stand-ins for your broker's types.
struct Order: Sendable {
    var id: String
    var cents: Int64
}

struct Message: Sendable {
    var id: String
    var order: Order
    func ack() async throws {}
    func nack(redeliverAfter delay: Duration = .zero) async throws {}
}

struct Broker {
    /// Three deliveries, the second a redelivery of the first.
    let messages = AsyncThrowingStream<Message, any Error> { continuation in
        let first = Message(id: "msg-1", order: Order(id: "order-7", cents: 1250))
        for message in [first, first, Message(id: "msg-2", order: Order(id: "order-8", cents: 990))] {
            continuation.yield(message)
        }
        continuation.finish()
    }
}

struct Payments {
    func charge(_ order: Order, fencingToken: Int64) async throws {
        print("charged \(order.id) (\(order.cents) cents) under fencing token \(fencingToken)")
    }
}

let broker = Broker()
let payments = Payments()
// snippet.show

// snippet.consumer
let store = try SQLiteDedupStore(path: "dedup.sqlite")
let consumer = try IdempotentConsumer(store: store, namespace: "billing-consumer-group")

for try await message in broker.messages {
    do {
        let outcome = try await consumer.process(key: message.id) { context in
            // Pass the fencing token downstream: it refuses writes from an older holder.
            try await payments.charge(message.order, fencingToken: context.fencingToken)
        }
        switch outcome {
        case .applied, .duplicate, .bypassed:
            try await message.ack()
        case .deferred(let retryAfter):
            // Another consumer is processing this key right now.
            try await message.nack(redeliverAfter: retryAfter)
        }
    } catch {
        try await message.nack()  // the handler or the store failed: nothing was recorded
    }
}
// snippet.end
