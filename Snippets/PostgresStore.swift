// Keeps dedup records in PostgreSQL through the application's own postgres-nio client, so many
// hosts share them.
//
// Creating the store applies pending migrations (under an advisory lock: many processes may start
// at once) in the schema the configuration names.

import Dedup
import DedupPostgres
import Logging
import PostgresNIO

// snippet.hide
struct Message: Sendable {
    let id: String
    let orderID: String
}

func charge(order: String, fencingToken: Int64) async throws {}

func ack(_ message: Message) async throws {}

let message = Message(id: "msg-1", orderID: "order-7")
// snippet.show

// snippet.open
let client = PostgresClient(
    configuration: .init(
        host: "db.internal",
        port: 5432,
        username: "billing",
        password: "…",
        database: "billing",
        tls: .disable
    )
)
try await withThrowingDiscardingTaskGroup { group in
    group.addTask { await client.run() }  // the application runs its client, as postgres-nio asks

    var configuration = PostgresDedupStore.Configuration()
    configuration.schema = "dedup"  // the tables' PostgreSQL schema, created if missing
    let store = try await PostgresDedupStore(client: client, configuration: configuration)
    try await handle(message, with: store)
    group.cancelAll()
}
// snippet.end

// snippet.process
func handle(_ message: Message, with store: PostgresDedupStore) async throws {
    let consumer = try IdempotentConsumer(store: store, namespace: "billing")
    let outcome = try await consumer.process(key: message.id) { context in
        try await charge(order: message.orderID, fencingToken: context.fencingToken)
    }
    if outcome.shouldAck { try await ack(message) }
}
// snippet.end

// snippet.url
/// A store with a client of its own, from a URL (`dedup-inspect --store` takes the same spelling).
func openFromURL() async throws -> PostgresDedupStore {
    try await PostgresDedupStore(url: "postgres://billing:secret@db.internal:5432/billing?schema=dedup")
}
// snippet.end
