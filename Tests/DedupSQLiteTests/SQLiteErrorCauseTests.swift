import CSQLite
import Dedup
import DedupSQLite
import DedupTestKit
import DedupTestSupport
import Foundation
import Testing

/// A `DedupError` from the SQLite store keeps SQLite's own report: its extended result code, and the
/// operating system's error behind a file that could not be opened.
@Suite("SQLite errors keep their cause")
struct SQLiteErrorCauseTests {
    @Test("a file that is not a database is corruptStore with SQLite's SQLITE_NOTADB")
    func notADatabase() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: path))
        let error = await expectDedupError(.corruptStore) { try SQLiteDedupStore(path: path, logger: quietLogger) }
        #expect(error?.sqliteExtendedResultCode == SQLITE_NOTADB)
        #expect(error?.redisErrorText == nil)
    }

    @Test("a transactional handler's constraint violation keeps SQLite's extended code SQLITE_CONSTRAINT_PRIMARYKEY")
    func constraintInTransaction() async throws {
        let fixture = StoreFixture()
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        let error = await expectDedupError(.handlerStatementFailed) {
            try await store.withTransactionalClaim(request("pay-1"), retention: .seconds(3600)) { transaction, _ in
                try transaction.execute("CREATE TABLE ledger (key TEXT PRIMARY KEY)")
                try transaction.execute("INSERT INTO ledger VALUES ('pay-1')")
                try transaction.execute("INSERT INTO ledger VALUES ('pay-1')")
                return nil
            }
        }
        // SQLITE_CONSTRAINT_PRIMARYKEY, a macro Swift does not import.
        #expect(error?.sqliteExtendedResultCode == SQLITE_CONSTRAINT | (6 << 8))
    }

    @Test("an unreadable file is permissionDenied with SQLITE_CANTOPEN and the operating system's EACCES")
    func unreadableFile() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        try SQLiteDedupStore(path: path, logger: quietLogger).close()
        chmod(directory.path, 0o755)
        chmod(path, 0o000)
        let error = await openAsUnprivilegedFileUser(path)
        #expect(error?.code == .permissionDenied, "\(String(describing: error))")
        let code = try #require(error?.sqliteExtendedResultCode)
        #expect(code & 0xff == SQLITE_CANTOPEN, "extended code \(code)")
        #expect(
            (error?.underlyingError as? POSIXError)?.code == .EACCES,
            "\(String(describing: error?.underlyingError))"
        )
    }
}
