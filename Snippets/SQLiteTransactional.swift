// Writes a handler's effect to the application's own table in the dedup file, in the same
// transaction as the message's completion: the row and the completed record commit together or
// not at all, so the effect is exactly once even if the process dies in between.

import Dedup
import DedupSQLite
import Foundation

// snippet.hide
struct Order: Sendable {
    let id: String
    let cents: Int
}

struct Message: Sendable {
    let id: String
    let order: Order
    let publishedAt: Date
}

let message = Message(id: "msg-42", order: Order(id: "order-42", cents: 1999), publishedAt: Date())
// snippet.show

let store = try SQLiteDedupStore(path: "/var/lib/billing/dedup.sqlite")
let consumer = try IdempotentConsumer(store: store, namespace: "billing")

// snippet.schema
// The application's table lives in the dedup file, created outside any claim.
try await store.withTransaction { transaction -> Void in
    try transaction.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger (
            order_id TEXT PRIMARY KEY,
            cents    INTEGER NOT NULL,
            fencing  INTEGER NOT NULL
        )
        """
    )
}
// snippet.end

// snippet.handler
/// Applies one message: returns whether to ack it.
func apply(_ message: Message) async throws -> Bool {
    let order = message.order
    // Keyed by the order, like the table: a producer's retry under a new message ID is a duplicate.
    let outcome = try await consumer.processInTransaction(key: order.id, brokerTime: message.publishedAt) {
        transaction,
        context in
        // Runs on the store's thread while the write lock is held: SQL only, no waiting.
        try transaction.execute(
            "INSERT INTO ledger (order_id, cents, fencing) VALUES (?, ?, ?)",
            .text(order.id),
            .integer(Int64(order.cents)),
            .integer(context.fencingToken)
        )
    }
    // .applied: the row and the completion committed; .duplicate: both committed before.
    // .deferred: a consumer outside transactional mode holds the key; deliver it again later.
    return outcome.shouldAck
}
// snippet.end

// snippet.claim
/// The same without an IdempotentConsumer: the store's own transactional claim, whose body may
/// return bytes to keep as the record's result.
func applyWithoutConsumer(_ message: Message) async throws -> Bool {
    let retention = Duration.seconds(24 * 3600)
    let request = ClaimRequest(
        id: try RecordID(namespace: "billing", key: message.id),
        lease: .seconds(30),
        retention: retention,
        brokerTime: message.publishedAt
    )
    let order = message.order
    let outcome = try await store.withTransactionalClaim(request, retention: retention) { transaction, lease in
        try transaction.execute(
            "INSERT INTO ledger (order_id, cents, fencing) VALUES (?, ?, ?)",
            .text(order.id),
            .integer(Int64(order.cents)),
            .integer(lease.fencingToken)
        )
        return Data("charged".utf8)  // kept with the completed record; nil keeps none
    }
    switch outcome {
    case .committed, .duplicate: return true
    case .inFlight: return false  // a consumer outside transactional mode holds the key
    case .payloadMismatch(let record): throw DedupError(.payloadMismatch, "\(record.id) has another payload")
    }
}
// snippet.end

// snippet.hide
_ = try await apply(message)
// snippet.show
