// A batch consumer: one store call claims a whole batch and one completes it, and each message
// gets its own result.

import Dedup
import DedupSQLite
// snippet.hide
import Foundation

struct Order: Sendable {
    var id: String
    var line: Int
    var cents: Int64
}

struct Message: Sendable {
    var id: String
    var order: Order
    func ack() async throws {}
    func nack(redeliverAfter delay: Duration = .zero) async throws {}
}

struct Broker {
    /// One batch of four: order-7's first line comes twice, under two message IDs (a producer retry).
    func batches(ofUpTo count: Int) -> AsyncThrowingStream<[Message], any Error> {
        AsyncThrowingStream { continuation in
            continuation.yield([
                Message(id: "msg-1", order: Order(id: "order-7", line: 1, cents: 1250)),
                Message(id: "msg-2", order: Order(id: "order-7", line: 2, cents: 300)),
                Message(id: "msg-3", order: Order(id: "order-7", line: 1, cents: 1250)),
                Message(id: "msg-4", order: Order(id: "order-8", line: 1, cents: 990)),
            ])
            continuation.finish()
        }
    }
}

struct Payments {
    func charge(_ order: Order, fencingToken: Int64) async throws {
        print("charged \(order.id) line \(order.line) under fencing token \(fencingToken)")
    }
}

let broker = Broker()
let payments = Payments()
let path = FileManager.default.temporaryDirectory.appendingPathComponent("batch-\(getpid()).sqlite").path
let consumer = try IdempotentConsumer(store: SQLiteDedupStore(path: path), namespace: "billing-consumer-group")
// snippet.show

// snippet.batch
// The same order line sent twice, under two message IDs, is one key.
let orderLine = KeyStrategy<Message>.businessKey { [$0.order.id, String($0.order.line)] }

for try await batch in broker.batches(ofUpTo: 100) {
    let results: [Result<ProcessOutcome, any Error>]
    do {
        results = try await consumer.processBatch(batch, keyStrategy: orderLine) { message, context in
            try await payments.charge(message.order, fencingToken: context.fencingToken)
        }
    } catch {
        for message in batch { try await message.nack() }  // the batch claim failed: nothing ran
        continue
    }
    for (message, result) in zip(batch, results) {  // one result per message, in order
        switch result {
        case .success(.deferred(let retryAfter)): try await message.nack(redeliverAfter: retryAfter)
        case .success: try await message.ack()  // applied, duplicate or bypassed
        case .failure: try await message.nack()  // its handler threw, its lease was lost, …
        }
    }
}
// snippet.end

// snippet.hide
for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
