// Opens a dedup store in an SQLite file, runs a handler once per message key, and deletes expired
// records on an interval.
//
// Opening creates the file if it is missing, applies pending migrations and switches the file to
// WAL. Several processes on one host may open the same file.

import Dedup
import DedupSQLite
import Logging
import ServiceLifecycle

// snippet.hide
struct Message: Sendable {
    let id: String
    let orderID: String
}

func charge(order: String, fencingToken: Int64) async throws {}

func ack(_ message: Message) async throws {}

func nack(_ message: Message) async throws {}

let message = Message(id: "msg-1", orderID: "order-7")
// snippet.show

// snippet.schemaStatus
/// A deployment step: reads where the file's schema stands without changing anything, then
/// migrates it, as opening the store would.
func migrateBeforeDeploying(path: String) throws {
    let status = try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: true)
    if let problem = status.problem {
        throw problem  // schemaTooNew or schemaAltered: no swift-dedup of this version opens the file
    }
    if status.integrity?.isOK == false {
        throw DedupError(.corruptStore, status.integrity?.messages.joined(separator: "; ") ?? "")
    }
    let applied = try SQLiteDedupStore.migrate(path: path)
    print("schema version \(status.currentVersion) → \(SQLiteMigration.latestVersion): applied \(applied)")
}
// snippet.end

// snippet.open
var configuration = SQLiteDedupStore.Configuration()
configuration.busyTimeout = .seconds(5)  // how long a write waits for another process's lock
configuration.synchronous = .full  // a returned commit survives power loss (default: .normal)
let store = try SQLiteDedupStore(path: "/var/lib/billing/dedup.sqlite", configuration: configuration)
// snippet.end

// snippet.process
let consumer = try IdempotentConsumer(store: store, namespace: "billing")
let outcome = try await consumer.process(key: message.id) { context in
    try await charge(order: message.orderID, fencingToken: context.fencingToken)
}
if outcome.shouldAck {
    try await ack(message)  // applied now, or completed before: a duplicate
} else {
    try await nack(message)  // deferred: another consumer holds the key right now
}
// snippet.end

// snippet.purge
let purge = SQLitePurgeService(store: store, interval: .seconds(60), batchSize: 1000)
let logger = Logger(label: "billing")
try await ServiceGroup(services: [purge], gracefulShutdownSignals: [.sigterm], logger: logger).run()
// snippet.end
