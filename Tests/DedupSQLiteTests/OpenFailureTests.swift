import CSQLite
import Dedup
import DedupTestKit
import DedupTestSupport
import Foundation
import Logging
import Testing

@testable import DedupSQLite

/// Runs `body` on a thread of its own whose file-system identity is `nobody` (65534), so file
/// permissions apply even when the tests run as root: a root thread that changes its fs uid loses
/// its capability to override them, for that thread only (Linux `setfsuid`).
func asUnprivilegedFileUser<R: Sendable>(_ body: @escaping @Sendable () -> R) async -> R {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            typealias SetID = @convention(c) (UInt32) -> Int32
            let root = getuid() == 0
            let setfsuid = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "setfsuid"), to: SetID.self)
            let setfsgid = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "setfsgid"), to: SetID.self)
            if root {
                _ = setfsgid(65534)
                _ = setfsuid(65534)
            }
            let result = body()
            if root {
                _ = setfsuid(0)
                _ = setfsgid(0)
            }
            continuation.resume(returning: result)
        }
        thread.start()
    }
}

/// Opens the store at `path` as ``asUnprivilegedFileUser(_:)``; returns the error it threw.
func openAsUnprivilegedFileUser(_ path: String) async -> DedupError? {
    await asUnprivilegedFileUser { () -> DedupError? in
        do {
            _ = try SQLiteDedupStore(path: path, logger: quietLogger)
            return nil
        } catch {
            return error as? DedupError
        }
    }
}

/// Raw SQL on a file, bypassing the store (to prepare damaged or foreign databases).
func rawSQL(_ path: String, _ sql: String) throws {
    var db: OpaquePointer?
    guard sqlite3_open(path, &db) == SQLITE_OK else { throw DedupError(.storeError, "raw open failed") }
    defer { sqlite3_close(db) }
    var message: UnsafeMutablePointer<CChar>?
    if sqlite3_exec(db, sql, nil, nil, &message) != SQLITE_OK {
        defer { sqlite3_free(message) }
        throw DedupError(.storeError, String(cString: message!))
    }
}

let quietLogger: Logger = {
    var logger = Logger(label: "dedup.sqlite.tests")
    logger.logLevel = .critical
    return logger
}()

@Suite("SQLiteDedupStore refuses bad files")
struct OpenFailureTests {
    /// Opens a store expecting `code`, and checks that the file and its side files are as before.
    func expectRefused(_ path: String, _ code: DedupError.Code, mentions: [String] = []) async {
        let before = contents(path)
        let error = await expectDedupError(code) { try SQLiteDedupStore(path: path, logger: quietLogger) }
        for text in mentions {
            #expect(error?.message.contains(text) == true, "\(error?.message ?? "") should mention \(text)")
        }
        #expect(contents(path) == before, "the refused file was changed")
        #expect((contents(path + "-wal") ?? Data()).isEmpty, "a refused file got a write-ahead log")
        #expect(!exists(path + "-journal"))
    }

    /// A migrated store with one completed record, closed and checkpointed.
    func populatedStore(_ directory: TemporaryDirectory) async throws -> String {
        let path = directory.file()
        let store = try SQLiteDedupStore(path: path, logger: quietLogger)
        let lease = try #require(try await store.claim(request("k1")).lease)
        try await store.complete(Completion(lease: lease, retention: .seconds(3600)))
        store.close()
        return path
    }

    @Test("a file of garbage bytes is corruptStore and is left as it was")
    func garbage() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        var generator = SystemRandomNumberGenerator()
        let garbage = Data((0..<8192).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try garbage.write(to: URL(fileURLWithPath: path))
        await expectRefused(path, .corruptStore, mentions: [path])
        await expectDedupError(.corruptStore) { try SQLiteDedupStore.schemaStatus(path: path) }
    }

    @Test("a schema version newer than the library is schemaTooNew, naming both versions")
    func newerSchema() async throws {
        let directory = TemporaryDirectory()
        let path = try await populatedStore(directory)
        try rawSQL(
            path,
            "INSERT INTO dedup_schema_migrations VALUES (99, 'from_the_future', 'fnv1a64:0000000000000001', 0)"
        )
        await expectRefused(path, .schemaTooNew, mentions: ["99", "version \(SQLiteMigration.latestVersion)", path])
        let status = try SQLiteDedupStore.schemaStatus(path: path)
        #expect(status.isNewerThanLibrary)
        #expect(status.currentVersion == 99)
        #expect(status.problem?.code == .schemaTooNew)
        #expect(status.applied.last?.status == .unknown)
    }

    @Test("an applied migration whose checksum differs is schemaAltered")
    func alteredMigration() async throws {
        let directory = TemporaryDirectory()
        let path = try await populatedStore(directory)
        try rawSQL(path, "UPDATE dedup_schema_migrations SET checksum = 'fnv1a64:0123456789abcdef' WHERE version = 1")
        await expectRefused(
            path,
            .schemaAltered,
            mentions: ["fnv1a64:0123456789abcdef", SQLiteMigration.all[0].checksum]
        )
        let status = try SQLiteDedupStore.schemaStatus(path: path)
        #expect(status.altered.map(\.version) == [1])
        #expect(status.problem?.code == .schemaAltered)
        #expect(!status.isHealthy)
    }

    @Test("a path in a missing directory is storeUnavailable naming the path, and creates nothing")
    func missingDirectory() async throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/no/such/dir/dedup.sqlite"
        let error = await expectDedupError(.storeUnavailable) { try SQLiteDedupStore(path: path, logger: quietLogger) }
        #expect(error?.message.contains(path) == true)
        #expect(!exists(directory.path + "/no"))
        await expectDedupError(.storeUnavailable) { try SQLiteDedupStore.migrate(path: path, logger: quietLogger) }
    }

    @Test(
        "an unreadable file is permissionDenied, a read-only one readOnly, each naming the path and left as it was",
        arguments: [(mode_t(0o000), DedupError.Code.permissionDenied), (mode_t(0o444), DedupError.Code.readOnly)]
    )
    func refusedFile(mode: mode_t, code: DedupError.Code) async throws {
        let directory = TemporaryDirectory()
        let path = try await populatedStore(directory)
        chmod(directory.path, 0o755)
        chmod(path, mode)
        let before = contents(path)
        let result = await openAsUnprivilegedFileUser(path)
        #expect(result?.code == code, "\(String(describing: result))")
        #expect(result?.message.contains(path) == true)
        #expect(contents(path) == before)
        #expect(!exists(path + "-wal"))
    }

    @Test("schemaStatus of a missing file is storeUnavailable and creates no file")
    func statusOfMissingFile() async throws {
        let directory = TemporaryDirectory()
        await expectDedupError(.storeUnavailable) { try SQLiteDedupStore.schemaStatus(path: directory.file()) }
        #expect(!exists(directory.file()))
    }

    @Test("SQLite failures map to the most specific codes")
    func failureMapping() {
        func code(_ rc: Int32, errno: Int32 = 0) -> DedupError.Code {
            SQLiteFailure(code: rc, message: "m", systemErrno: errno).dedupError("op", path: "/p").code
        }
        #expect(code(SQLITE_BUSY) == .busy)
        #expect(code(SQLITE_CORRUPT) == .corruptStore)
        #expect(code(SQLITE_NOTADB) == .corruptStore)
        #expect(code(SQLITE_READONLY) == .readOnly)
        #expect(code(SQLITE_FULL) == .outOfMemory)
        #expect(code(SQLITE_NOMEM) == .outOfMemory)
        #expect(code(SQLITE_CANTOPEN, errno: EACCES) == .permissionDenied)
        #expect(code(SQLITE_CANTOPEN, errno: ENOENT) == .storeUnavailable)
        #expect(code(SQLITE_IOERR) == .storeError)
    }

    @Test("a mapped failure keeps SQLite's extended code, and the OS error only where SQLite's errno applies")
    func failureCause() {
        func error(_ rc: Int32, errno: Int32 = 0) -> DedupError {
            SQLiteFailure(code: rc, message: "m", systemErrno: errno).dedupError("op", path: "/p")
        }
        // SQLITE_CANTOPEN with EACCES, and SQLITE_IOERR_READ (266), carry errno.
        #expect(error(SQLITE_CANTOPEN, errno: EACCES).sqliteExtendedResultCode == SQLITE_CANTOPEN)
        #expect((error(SQLITE_CANTOPEN, errno: EACCES).underlyingError as? POSIXError)?.code == .EACCES)
        #expect((error(SQLITE_IOERR | (1 << 8), errno: EIO).underlyingError as? POSIXError)?.code == .EIO)
        #expect(error(SQLITE_IOERR | (1 << 8), errno: EIO).sqliteExtendedResultCode == 266)
        // Elsewhere sqlite3_system_errno is left from some earlier call: not this failure's cause.
        #expect(error(SQLITE_CONSTRAINT | (6 << 8), errno: ENOENT).underlyingError == nil)
        #expect(error(SQLITE_CONSTRAINT | (6 << 8), errno: ENOENT).sqliteExtendedResultCode == 1555)
        #expect(error(SQLITE_CANTOPEN).underlyingError == nil)
    }
}

@Suite("SQLite schema inspection and migration")
struct SchemaTests {
    @Test("migrate creates and migrates a new file once; status then reports it current and intact")
    func migrateThenStatus() throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        let applied = try SQLiteDedupStore.migrate(path: path, logger: quietLogger)
        #expect(applied == SQLiteMigration.all)
        #expect(try SQLiteDedupStore.migrate(path: path, logger: quietLogger).isEmpty)
        let status = try SQLiteDedupStore.schemaStatus(path: path)
        #expect(status.currentVersion == SQLiteMigration.latestVersion)
        #expect(status.latestVersion == SQLiteMigration.latestVersion)
        #expect(status.pending.isEmpty)
        #expect(status.applied.map(\.checksum) == SQLiteMigration.all.map(\.checksum))
        #expect(status.applied.allSatisfy { $0.status == .matches })
        #expect(status.integrity == SQLiteIntegrity(isOK: true, messages: ["ok"]))
        #expect(status.isHealthy)
    }

    @Test("an empty file reports every migration pending and is left unmigrated by schemaStatus")
    func pendingOnEmptyFile() throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        let status = try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: false)
        #expect(status.currentVersion == 0)
        #expect(status.pending == SQLiteMigration.all)
        #expect(status.integrity == nil)
        #expect(contents(path) == Data())
    }

    @Test("the store shares its file with the application's own tables")
    func foreignTables() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file()
        try rawSQL(
            path,
            "CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER); INSERT INTO payments VALUES ('p1', 5)"
        )
        let store = try SQLiteDedupStore(path: path, logger: quietLogger)
        #expect(try await store.claim(request("k")).lease != nil)
        store.close()
        #expect(try SQLiteDedupStore.schemaStatus(path: path).isHealthy)
    }
}
