import Dedup
import DedupPostgres
import DedupSQLite
import DedupTestKit
import Foundation
import PostgresNIO
import Synchronization

/// A ledger whose effect rows commit in the same transaction as the completion (the store's
/// transactional mode): a crash after the effect rolls both back.
protocol TransactionalEffectLedger: EffectLedger {
    /// Processes `message` in transactional mode; `afterEffect` runs once the effect row is written
    /// (the demo's crash throws there).
    func applyTransactionally(
        _ message: SimulatedBroker.Message,
        consumer: IdempotentConsumer,
        afterEffect: @escaping @Sendable () throws -> Void
    ) async throws -> (ProcessOutcome, takeover: Bool)
}

extension SQLiteEffectLedger: TransactionalEffectLedger {
    func applyTransactionally(
        _ message: SimulatedBroker.Message,
        consumer: IdempotentConsumer,
        afterEffect: @escaping @Sendable () throws -> Void
    ) async throws -> (ProcessOutcome, takeover: Bool) {
        try await applyTransactionally(message, consumer: consumer) { _ in try afterEffect() }
    }
}

/// The ledger for PostgreSQL: a table beside the dedup tables (in the store's schema), written in
/// the transaction that completes the message.
final class PostgresEffectLedger: TransactionalEffectLedger {
    /// The table of effect rows, one per handler run.
    static let table = "demo_effects"
    let store: PostgresDedupStore
    let run: String
    /// `"schema".demo_effects`.
    let qualifiedTable: String

    init(store: PostgresDedupStore, run: String) async throws {
        self.store = store
        self.run = run
        qualifiedTable = "\"\(store.configuration.schema.replacingOccurrences(of: "\"", with: "\"\""))\".\(Self.table)"
        try await store.client.query(
            PostgresQuery(
                unsafeSQL:
                    "CREATE TABLE IF NOT EXISTS \(qualifiedTable) (run text NOT NULL, message_id text NOT NULL, fencing bigint NOT NULL)"
            )
        )
    }

    private func insert(_ messageID: String, fencingToken: Int64) -> PostgresQuery {
        var bindings = PostgresBindings()
        bindings.append(run)
        bindings.append(messageID)
        bindings.append(fencingToken)
        return PostgresQuery(
            unsafeSQL: "INSERT INTO \(qualifiedTable) (run, message_id, fencing) VALUES ($1, $2, $3)",
            binds: bindings
        )
    }

    func applyTransactionally(
        _ message: SimulatedBroker.Message,
        consumer: IdempotentConsumer,
        afterEffect: @escaping @Sendable () throws -> Void
    ) async throws -> (ProcessOutcome, takeover: Bool) {
        let took = Mutex(false)
        let outcome = try await consumer.processInTransaction(key: message.key, brokerTime: message.publishedAt) {
            connection,
            context in
            took.withLock { $0 = context.isTakeover }
            try await connection.query(self.insert(message.id, fencingToken: context.fencingToken), logger: demoLogger)
            try afterEffect()
        }
        return (outcome, took.withLock { $0 })
    }

    func record(messageID: String, fencingToken: Int64) async throws {
        try await store.client.query(insert(messageID, fencingToken: fencingToken))
    }

    func effectCounts() async throws -> [String: Int] {
        var bindings = PostgresBindings()
        bindings.append(run)
        var counts: [String: Int] = [:]
        let rows = try await store.client.query(
            PostgresQuery(
                unsafeSQL: "SELECT message_id, count(*) FROM \(qualifiedTable) WHERE run = $1 GROUP BY message_id",
                binds: bindings
            )
        )
        for try await (messageID, count) in rows.decode((String, Int64).self) {
            counts[messageID, default: 0] += Int(count)
        }
        return counts
    }
}

private let demoLogger = Logger(label: "dedup-demo")

extension DemoDataLocation {
    /// The rows of `namespace` in a PostgreSQL store's schema, and its effect rows in `table` (none
    /// when `nil`: the stream demo's effects are in ledger files); the printed command never holds
    /// the password.
    static func postgres(
        location: String,
        url: PostgresURL,
        schema: String,
        namespace: String,
        table: String?
    )
        -> DemoDataLocation
    {
        let quotedSchema = "\"\(schema.replacingOccurrences(of: "\"", with: "\"\""))\""
        var statements =
            "DELETE FROM \(quotedSchema).dedup_records WHERE namespace = convert_to('\(namespace)', 'UTF8');"
        if let table { statements += " DELETE FROM \(quotedSchema).\(table) WHERE run = '\(namespace)';" }
        let connection = ["-h", url.host, "-p", String(url.port), "-U", url.username, "-d", url.database].map(
            shellQuoted
        ).joined(separator: " ")
        var command = "psql \(connection) -c \(shellQuoted(statements))"
        if url.password != nil { command += "   # with the password in PGPASSWORD" }
        return DemoDataLocation(
            description:
                "\(location) (dedup records of namespace \(namespace) in schema \(schema)"
                + (table.map { ", effect rows in table \(schema).\($0))" } ?? ")"),
            removalCommand: command
        )
    }
}
