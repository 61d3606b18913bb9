// Exactly-once effects in PostgreSQL: the handler's own writes and the message's completion commit
// in one transaction, on the connection the store hands the handler.

import Dedup
import DedupPostgres
import PostgresNIO

// snippet.hide
struct Payment: Sendable {
    let messageID: String
    let orderID: String
    let cents: Int
}
// snippet.show

// snippet.consumer
func apply(_ payment: Payment, consumer: IdempotentConsumer) async throws -> ProcessOutcome {
    try await consumer.processInTransaction(key: payment.messageID) { connection, context in
        try await connection.query(
            """
            INSERT INTO payments (order_id, cents, fencing) VALUES (\(payment.orderID), \(payment.cents), \(context.fencingToken))
            """,
            logger: .init(label: "payments")
        )
    }
}
// snippet.end

// snippet.callersTransaction
/// Inside the application's own transaction: the claim, the effect and the completion commit with
/// it; a failure inside rolls back to a savepoint and leaves the transaction usable.
func applyInside(_ payment: Payment, store: PostgresDedupStore, client: PostgresClient) async throws {
    try await client.withTransaction(logger: .init(label: "payments")) { connection in
        let request = ClaimRequest(
            id: try RecordID(namespace: "payments", key: payment.messageID),
            lease: .seconds(30),
            retention: .seconds(7 * 86_400)
        )
        _ = try await store.withTransactionalClaim(request, retention: .seconds(7 * 86_400), in: connection) {
            connection,
            lease in
            try await connection.query(
                "INSERT INTO payments (order_id, cents, fencing) VALUES (\(payment.orderID), \(payment.cents), \(lease.fencingToken))",
                logger: .init(label: "payments")
            )
            return nil
        }
    }
}
// snippet.end
