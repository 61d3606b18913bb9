import Dedup
import DedupSQLite
import DedupTestKit
import Foundation
import Synchronization

/// Where the demo's handler records its side effect, one row per handler run, so the demo can count
/// how often each message was applied.
protocol EffectLedger: Sendable {
    /// Records one application of a message.
    func record(messageID: String, fencingToken: Int64) async throws
    /// Applications per message ID.
    func effectCounts() async throws -> [String: Int]
}

extension EffectLedger {
    /// All applications.
    func totalEffects() async throws -> Int {
        try await effectCounts().values.reduce(0, +)
    }
}

/// The ledger for stores without transactions of their own (Redis): in the demo's memory.
final class MemoryEffectLedger: EffectLedger {
    private let counts = Mutex<[String: Int]>([:])

    func record(messageID: String, fencingToken: Int64) {
        counts.withLock { $0[messageID, default: 0] += 1 }
    }

    func effectCounts() -> [String: Int] { counts.withLock { $0 } }
}

/// The ledger for SQLite: a table in the dedup file itself, written in the same transaction as the
/// completion (transactional mode), so an effect and its completion commit together or not at all.
final class SQLiteEffectLedger: EffectLedger {
    /// The table of effect rows, one per handler run.
    static let table = "demo_effects"
    let store: SQLiteDedupStore
    let run: String

    init(store: SQLiteDedupStore, run: String) async throws {
        self.store = store
        self.run = run
        try await store.withTransaction { transaction in
            _ = try transaction.execute(
                """
                CREATE TABLE IF NOT EXISTS \(Self.table)(
                    run TEXT NOT NULL, message_id TEXT NOT NULL, fencing INTEGER NOT NULL)
                """
            )
            _ = try transaction.execute(
                "CREATE INDEX IF NOT EXISTS \(Self.table)_run ON \(Self.table)(run, message_id)"
            )
        }
    }

    /// Processes a message in transactional mode: the effect row and the completion commit together.
    /// `afterEffect` runs after the row is written (the demo's crash throws there: both roll back).
    func applyTransactionally(
        _ message: SimulatedBroker.Message,
        consumer: IdempotentConsumer,
        afterEffect: @escaping @Sendable (SQLiteTransaction) throws -> Void
    ) async throws -> (ProcessOutcome, takeover: Bool) {
        try await applyTransactionally(
            messageID: message.id,
            key: message.key,
            brokerTime: message.publishedAt,
            consumer: consumer,
            afterEffect: afterEffect
        )
    }

    /// Processes the message `messageID` under `key` in transactional mode; see
    /// ``applyTransactionally(_:consumer:afterEffect:)``.
    func applyTransactionally(
        messageID: String,
        key: String,
        brokerTime: Date?,
        consumer: IdempotentConsumer,
        afterEffect: @escaping @Sendable (SQLiteTransaction) throws -> Void
    ) async throws -> (ProcessOutcome, takeover: Bool) {
        let run = self.run
        let took = Mutex(false)
        let outcome = try await consumer.processInTransaction(key: key, brokerTime: brokerTime) {
            transaction,
            context in
            took.withLock { $0 = context.isTakeover }
            _ = try transaction.execute(
                "INSERT INTO \(Self.table)(run, message_id, fencing) VALUES (?, ?, ?)",
                [.text(run), .text(messageID), .integer(context.fencingToken)]
            )
            try afterEffect(transaction)
        }
        return (outcome, took.withLock { $0 })
    }

    func record(messageID: String, fencingToken: Int64) async throws {
        let run = self.run
        try await store.withTransaction { transaction in
            _ = try transaction.execute(
                "INSERT INTO \(Self.table)(run, message_id, fencing) VALUES (?, ?, ?)",
                [.text(run), .text(messageID), .integer(fencingToken)]
            )
        }
    }

    func effectCounts() async throws -> [String: Int] {
        let run = self.run
        return try await store.withTransaction { transaction in
            var counts: [String: Int] = [:]
            for row in try transaction.query(
                "SELECT message_id, count(*) FROM \(Self.table) WHERE run = ? GROUP BY message_id",
                [.text(run)]
            ) {
                counts[row[0].string ?? "", default: 0] += Int(row[1].int64 ?? 0)
            }
            return counts
        }
    }
}
