// The worker's transactional mode on PostgreSQL, for the tests that kill workers with SIGKILL in
// the middle of a transaction: every handler run writes a ledger line when it starts (inside the
// transaction, so a killed run leaves its line) and inserts its effect row in the transaction that
// completes the key, so each key must end with exactly one effect row however many runs died.
import Dedup
import DedupPostgres
import DedupStoreLocator
import DedupTestKit
import Foundation
import PostgresNIO

func runInbox(_ options: Options, effectsTable: String, ledger: Ledger) async {
    let pid = getpid()
    do {
        guard case .postgres(let url) = try StoreLocation(parsing: options.store) else {
            fail("--effects-table needs a postgres:// store")
        }
        let store = try await PostgresDedupStore(url: url)
        defer { store.close() }
        let consumer = try IdempotentConsumer(store: store, namespace: options.namespace)
        let insert = "INSERT INTO \(effectsTable) (key, pid) VALUES ($1, $2)"
        let handlerMicroseconds = options.handlerMicroseconds
        var random = SplitMix64(seed: options.seed)
        var applied = 0
        var duplicates = 0
        var retried = 0
        var pending = Array(0..<options.keys).shuffled(using: &random)
        while !pending.isEmpty {
            var retry: [Int] = []
            for number in pending {
                do {
                    let outcome = try await consumer.processInTransaction(key: "key-\(number)") { connection, context in
                        ledger.append("\(number) \(pid) \(context.fencingToken)")
                        var bindings = PostgresBindings()
                        bindings.append(number)
                        bindings.append(Int(pid))
                        try await connection.query(
                            PostgresQuery(unsafeSQL: insert, binds: bindings),
                            logger: inboxLogger
                        )
                        if handlerMicroseconds > 0 { try await Task.sleep(for: .microseconds(handlerMicroseconds)) }
                    }
                    switch outcome {
                    case .applied: applied += 1
                    case .duplicate: duplicates += 1
                    default: retry.append(number)
                    }
                } catch let error as DedupError where error.code == .busy {
                    // Another worker's transaction held the key past lock_timeout: try it again.
                    retry.append(number)
                }
            }
            retried += retry.count
            pending = retry
        }
        print("{\"pid\":\(pid),\"applied\":\(applied),\"duplicates\":\(duplicates),\"retried\":\(retried)}")
    } catch {
        fail("\(error)")
    }
}

let inboxLogger = Logger(label: "dedup-worker")
