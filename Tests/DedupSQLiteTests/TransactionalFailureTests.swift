import CSQLite
import Dedup
import DedupTestKit
import DedupTestSupport
import Foundation
import Testing

@testable import DedupSQLite

/// A statement of the handler's own that fails for a reason of its own: one of its statements, some
/// data, or a value.
struct FailingStatement: Sendable, CustomTestStringConvertible {
    var name: String
    /// Run first, in the same handler (rolled back with everything else).
    var setup: String?
    var sql: String
    var bindings: [SQLiteValue] = []
    /// SQLite's extended result code, `nil` for a failure the store finds before SQLite does.
    var sqliteCode: Int32?
    /// What the message must contain.
    var says: String

    var testDescription: String { name }

    static let all: [FailingStatement] = [
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_NOTNULL, SQLITE_CONSTRAINT_CHECK and
        // SQLITE_CONSTRAINT_DATATYPE: macros Swift does not import.
        .init(
            name: "UNIQUE",
            sql: "INSERT INTO ledger (key, amount) VALUES ('seed', 2)",
            sqliteCode: SQLITE_CONSTRAINT | (6 << 8),
            says: "UNIQUE constraint failed: ledger.key"
        ),
        .init(
            name: "NOT NULL",
            sql: "INSERT INTO ledger (key) VALUES ('k')",
            sqliteCode: SQLITE_CONSTRAINT | (5 << 8),
            says: "NOT NULL constraint failed: ledger.amount"
        ),
        .init(
            name: "CHECK",
            setup: "CREATE TABLE positive (n INTEGER CHECK (n > 0))",
            sql: "INSERT INTO positive VALUES (0)",
            sqliteCode: SQLITE_CONSTRAINT | (1 << 8),
            says: "CHECK constraint failed"
        ),
        .init(
            name: "STRICT column type",
            setup: "CREATE TABLE typed (n INTEGER) STRICT",
            sql: "INSERT INTO typed VALUES ('abc')",
            sqliteCode: SQLITE_CONSTRAINT | (12 << 8),
            says: "cannot store TEXT value in INTEGER column typed.n"
        ),
        .init(
            name: "datatype mismatch",
            sql: "INSERT INTO ledger (rowid, key, amount) VALUES ('x', 'k', 1)",
            sqliteCode: SQLITE_MISMATCH,
            says: "datatype mismatch"
        ),
        .init(
            name: "syntax error",
            sql: "INSERT INTO ledger VALUES (",
            sqliteCode: SQLITE_ERROR,
            says: "incomplete input"
        ),
        .init(
            name: "missing table",
            sql: "INSERT INTO no_such_table VALUES (1)",
            sqliteCode: SQLITE_ERROR,
            says: "no such table: no_such_table"
        ),
        .init(
            name: "missing column",
            sql: "SELECT nope FROM ledger",
            sqliteCode: SQLITE_ERROR,
            says: "no such column: nope"
        ),
        .init(
            name: "several statements with bindings",
            sql: "INSERT INTO ledger VALUES (?, 1); INSERT INTO ledger VALUES ('b', 1)",
            bindings: ["a"],
            sqliteCode: SQLITE_MISUSE,
            says: "one SQL statement expected"
        ),
        .init(
            name: "too many values",
            sql: "SELECT ?",
            bindings: [1, 2],
            sqliteCode: nil,
            says: "takes 1 parameters but 2 values"
        ),
    ]
}

/// How failures inside a transactional handler are told apart: the handler's own statement (its
/// SQL or its data: ``DedupError/Code/handlerStatementFailed``, not a store failure, so it counts
/// as a handler failure) from the store's (busy, disk full, I/O: store failures with their codes).
extension TransactionalTests {
    @Test(
        "a UNIQUE violation in the handler is handlerStatementFailed, not a store failure: nothing commits and the key is claimable again"
    )
    func uniqueViolationIsTheHandlers() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", logger: quietLogger)
        #expect(
            try await consumer.processInTransaction(key: "first") { tx, _ in
                try tx.execute("INSERT INTO ledger (key, amount) VALUES ('pay-1', 1)")
            } == .applied
        )
        // A replayed message whose effect row is already there.
        let error = await expectDedupError(.handlerStatementFailed) {
            try await consumer.processInTransaction(key: "replayed") { tx, _ in
                try tx.execute("INSERT INTO ledger (key, amount) VALUES ('other', 2)")
                try tx.execute("INSERT INTO ledger (key, amount) VALUES (?, ?)", "pay-1", 3)
            }
        }
        #expect(error?.isStoreFailure == false)
        #expect(error?.sqliteExtendedResultCode == SQLITE_CONSTRAINT | (6 << 8))  // SQLITE_CONSTRAINT_PRIMARYKEY
        #expect(error?.message.contains("UNIQUE constraint failed: ledger.key") == true, "\(String(describing: error))")
        #expect(error?.message.contains(fixture.path) == true, "\(String(describing: error))")
        // Nothing committed: neither the handler's first row nor the claim.
        #expect(try await store.record(for: makeID("replayed")) == nil)
        #expect(try await ledger(store) == ["pay-1": 1])
        let again = try await consumer.processInTransaction(key: "replayed") { tx, context in
            #expect(context.attempt == 1)
            try tx.execute("INSERT INTO ledger (key, amount) VALUES ('other', 2)")
        }
        #expect(again == .applied)
        #expect(try await ledger(store) == ["pay-1": 1, "other": 2])
    }

    @Test(
        "a statement failing for a reason of its own is handlerStatementFailed with SQLite's message and code",
        arguments: FailingStatement.all
    )
    func statementFailures(_ statement: FailingStatement) async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        _ = try await store.withTransaction { try $0.execute("INSERT INTO ledger (key, amount) VALUES ('seed', 1)") }
        let error = await expectDedupError(.handlerStatementFailed) {
            try await store.withTransactionalClaim(request("k"), retention: .seconds(3600)) { tx, _ in
                if let setup = statement.setup { try tx.execute(setup) }
                _ = try tx.query(statement.sql, statement.bindings)
                return nil
            }
        }
        #expect(error?.isStoreFailure == false)
        #expect(error?.sqliteExtendedResultCode == statement.sqliteCode, "\(String(describing: error))")
        #expect(error?.message.contains(statement.says) == true, "\(String(describing: error))")
        #expect(try await store.record(for: makeID("k")) == nil)
        #expect(try await ledger(store) == ["seed": 1])
    }

    @Test("the store's own failure inside the handler (the file full) stays a store failure with its code")
    func storeFailureInsideTheHandler() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let error = await expectDedupError(.outOfMemory) {
            try await store.withTransactionalClaim(request("full"), retention: .seconds(3600)) { tx, _ in
                // The file may grow no more: as a full disk does, without filling one.
                let pages = try tx.query("PRAGMA page_count")[0][0].int64 ?? 0
                try tx.execute("PRAGMA max_page_count = \(pages)")
                try tx.execute(
                    "INSERT INTO ledger (key, amount) VALUES (?, 1)",
                    .text(String(repeating: "x", count: 1 << 20))
                )
                return nil
            }
        }
        #expect(error?.isStoreFailure == true)
        #expect(
            error.map { $0.sqliteExtendedResultCode.map { $0 & 0xff } } == SQLITE_FULL,
            "\(String(describing: error))"
        )
        #expect(try await store.record(for: makeID("full")) == nil)
    }

    @Test(
        "in a handler's statement, SQLite's codes for the statement or its data are the handler's; the store's keep their codes"
    )
    func handlerStatementMapping() {
        func error(_ rc: Int32) -> DedupError {
            SQLiteFailure(code: rc, message: "m").handlerStatementError(path: "/p")
        }
        // SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_TRIGGER, SQLITE_ERROR_MISSING_COLLSEQ.
        let handlers = [
            SQLITE_CONSTRAINT, SQLITE_CONSTRAINT | (3 << 8), SQLITE_CONSTRAINT | (7 << 8), SQLITE_MISMATCH,
            SQLITE_RANGE,
            SQLITE_TOOBIG, SQLITE_ERROR, SQLITE_ERROR | (1 << 8), SQLITE_MISUSE, SQLITE_AUTH,
        ]
        for rc in handlers {
            #expect(error(rc).code == .handlerStatementFailed, "SQLite code \(rc)")
            #expect(error(rc).sqliteExtendedResultCode == rc)
        }
        // SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED.
        let stores: [(Int32, DedupError.Code)] = [
            (SQLITE_BUSY, .busy), (SQLITE_LOCKED, .busy), (SQLITE_IOERR | (3 << 8), .storeError),
            (SQLITE_FULL, .outOfMemory),
            (SQLITE_NOMEM, .outOfMemory), (SQLITE_READONLY | (4 << 8), .readOnly), (SQLITE_CORRUPT, .corruptStore),
            (SQLITE_PERM, .permissionDenied), (SQLITE_CANTOPEN, .storeUnavailable), (SQLITE_INTERNAL, .storeError),
            (SQLITE_SCHEMA, .storeError), (SQLITE_PROTOCOL, .storeError), (SQLITE_ABORT, .storeError),
        ]
        for (rc, code) in stores {
            #expect(error(rc).code == code, "SQLite code \(rc)")
            #expect(error(rc).isStoreFailure, "SQLite code \(rc)")
        }
    }

    @Test(
        "a statement that makes SQLite roll the whole transaction back ends it: later statements are refused, not committed on their own"
    )
    func rolledBackByTheHandlersStatement() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        _ = try await store.withTransaction { try $0.execute("INSERT INTO ledger (key, amount) VALUES ('seed', 1)") }
        let later = await expectDedupError(.handlerStatementFailed) {
            try await store.withTransactionalClaim(request("or-rollback"), retention: .seconds(3600)) { tx, _ in
                // The conflict clause rolls back the transaction, claim included; the handler
                // ignores the error and writes on.
                _ = try? tx.execute("INSERT OR ROLLBACK INTO ledger (key, amount) VALUES ('seed', 2)")
                try tx.execute("INSERT INTO ledger (key, amount) VALUES ('after', 3)")
                return nil
            }
        }
        #expect(later?.message.contains("UNIQUE constraint failed: ledger.key") == true, "\(String(describing: later))")
        // Ignored too: the handler returns, and the claim is not committed without its transaction.
        await expectDedupError(.handlerStatementFailed) {
            try await store.withTransactionalClaim(request("or-rollback"), retention: .seconds(3600)) { tx, _ in
                _ = try? tx.execute("INSERT OR ROLLBACK INTO ledger (key, amount) VALUES ('seed', 2)")
                _ = try? tx.execute("INSERT INTO ledger (key, amount) VALUES ('after', 3)")
                return nil
            }
        }
        #expect(try await store.record(for: makeID("or-rollback")) == nil)
        #expect(try await ledger(store) == ["seed": 1])
    }
}
