import CSQLite
import Dedup
import Foundation
import Logging

/// One step of the SQLite schema: a file `Migrations/sqlite/NNNN_name.sql` of the repository,
/// shipped inside the library as ``SQLiteMigration/all``.
///
/// Migrations are applied in version order at open, each in its own transaction, and recorded in
/// the table `dedup_schema_migrations` (version, name, checksum, applied_at) so a later open can
/// tell whether the database is behind, ahead of, or different from this library.
public struct SQLiteMigration: Sendable, Hashable, CustomStringConvertible {
    /// The migration's number: 1, 2, … without gaps.
    public let version: Int
    /// The file name's part after the number, e.g. `create_records`.
    public let name: String
    /// The SQL text, exactly as in the file.
    public let sql: String

    /// Creates a migration.
    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// The checksum recorded when the migration is applied: ``checksum(of:)`` of ``sql``.
    public var checksum: String { Self.checksum(of: sql) }

    /// The highest version this library knows.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    /// `fnv1a64:` and the 16 hex digits of the 64-bit FNV-1a hash of the text's UTF-8 bytes.
    ///
    /// Not a security measure: it detects an accidental edit of an applied migration, which is all
    /// a checksum here is for (whoever can write the file can rewrite the recorded checksum too).
    public static func checksum(of sql: String) -> String {
        MigrationChecksum.fnv1a64(sql)
    }

    /// `0001_create_records`.
    public var description: String {
        let number = String(version)
        return String(repeating: "0", count: max(0, 4 - number.count)) + number + "_" + name
    }
}

/// A migration as recorded in a database.
public struct SQLiteAppliedMigration: Sendable, Hashable {
    /// How the recorded migration compares with this library's.
    public enum Status: String, Sendable, Hashable {
        /// Same version, same checksum.
        case matches
        /// This library has the version with another checksum: someone changed an applied migration.
        case altered
        /// This library does not know the version: a newer swift-dedup applied it.
        case unknown
    }

    /// The migration's number.
    public var version: Int
    /// Its name, as recorded.
    public var name: String
    /// Its checksum, as recorded.
    public var checksum: String
    /// When it was applied (host clock).
    public var appliedAt: Date
    /// How it compares with this library's migration of the same version.
    public var status: Status

    /// Creates a recorded migration.
    public init(version: Int, name: String, checksum: String, appliedAt: Date, status: Status) {
        self.version = version
        self.name = name
        self.checksum = checksum
        self.appliedAt = appliedAt
        self.status = status
    }
}

/// The result of SQLite's integrity check.
public struct SQLiteIntegrity: Sendable, Hashable {
    /// `true` when `PRAGMA quick_check` answered `ok`.
    public var isOK: Bool
    /// What the check reported (`["ok"]` when fine; otherwise the problems, at most 100).
    public var messages: [String]

    /// Creates a result.
    public init(isOK: Bool, messages: [String]) {
        self.isOK = isOK
        self.messages = messages
    }
}

/// Where an SQLite store's schema stands, for `dedup-inspect check` and `migrate`.
public struct SQLiteSchemaStatus: Sendable, Hashable {
    /// The database file.
    public var path: String
    /// The migrations recorded in the database, in version order.
    public var applied: [SQLiteAppliedMigration]
    /// The highest applied version (0 for a database without the dedup schema).
    public var currentVersion: Int
    /// The highest version this library knows (``SQLiteMigration/latestVersion``).
    public var latestVersion: Int
    /// This library's migrations not yet applied, in the order they would be.
    public var pending: [SQLiteMigration]
    /// The integrity check's result; `nil` when it was not asked for.
    public var integrity: SQLiteIntegrity?

    /// Creates a status.
    public init(
        path: String,
        applied: [SQLiteAppliedMigration],
        currentVersion: Int,
        latestVersion: Int,
        pending: [SQLiteMigration],
        integrity: SQLiteIntegrity?
    ) {
        self.path = path
        self.applied = applied
        self.currentVersion = currentVersion
        self.latestVersion = latestVersion
        self.pending = pending
        self.integrity = integrity
    }

    /// The database was migrated by a newer swift-dedup: this library refuses to open it.
    public var isNewerThanLibrary: Bool { currentVersion > latestVersion }

    /// Applied migrations whose text differs from this library's: this library refuses to open it.
    public var altered: [SQLiteAppliedMigration] { applied.filter { $0.status == .altered } }

    /// Why opening the database would fail because of its schema (``/Dedup/DedupError/Code/schemaTooNew``
    /// or ``/Dedup/DedupError/Code/schemaAltered``); `nil` when it can be opened (migrating if pending).
    public var problem: DedupError? {
        do {
            try MigrationRunner.validate(applied, path: path)
            return nil
        } catch {
            return error
        }
    }

    /// Up to date and, when checked, intact.
    public var isHealthy: Bool {
        problem == nil && pending.isEmpty && (integrity?.isOK ?? true)
    }
}

/// Reads, checks and applies migrations on a connection.
enum MigrationRunner {
    static let tableSQL = """
        CREATE TABLE IF NOT EXISTS dedup_schema_migrations (\
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)
        """

    /// The recorded migrations; empty when the table does not exist. Reading the schema is also
    /// what first touches the file, so a file that is not a database fails here.
    static func readApplied(_ connection: Connection) throws(SQLiteFailure) -> [SQLiteAppliedMigration] {
        let exists = try connection.scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dedup_schema_migrations'"
        )
        guard exists == 1 else { return [] }
        let known = Dictionary(uniqueKeysWithValues: SQLiteMigration.all.map { ($0.version, $0) })
        let statement = try connection.prepare(
            "SELECT version, name, checksum, applied_at FROM dedup_schema_migrations ORDER BY version"
        )
        var applied: [SQLiteAppliedMigration] = []
        while try statement.step() {
            let version = Int(statement.int64(0))
            let checksum = statement.text(2) ?? ""
            let status: SQLiteAppliedMigration.Status
            if let migration = known[version] {
                status = migration.checksum == checksum ? .matches : .altered
            } else {
                status = version > SQLiteMigration.latestVersion ? .unknown : .altered
            }
            applied.append(
                SQLiteAppliedMigration(
                    version: version,
                    name: statement.text(1) ?? "",
                    checksum: checksum,
                    appliedAt: Date(millisecondsSince1970: statement.int64(3)),
                    status: status
                )
            )
        }
        return applied
    }

    /// Refuses a schema newer than the library or an altered applied migration.
    static func validate(_ applied: [SQLiteAppliedMigration], path: String) throws(DedupError) {
        let current = applied.map(\.version).max() ?? 0
        let latest = SQLiteMigration.latestVersion
        if current > latest {
            throw DedupError(
                .schemaTooNew,
                "the SQLite store \(path.debugDescription) has schema version \(current), newer than version \(latest), "
                    + "the latest this swift-dedup knows: upgrade swift-dedup to open it"
            )
        }
        if let altered = applied.first(where: { $0.status != .matches }) {
            let ours = SQLiteMigration.all.first { $0.version == altered.version }
            throw DedupError(
                .schemaAltered,
                "migration \(altered.version) (\(altered.name)) applied to the SQLite store \(path.debugDescription) "
                    + "has checksum \(altered.checksum), but this swift-dedup's is \(ours?.checksum ?? "unknown"): "
                    + "the applied migration was changed; restore it or recreate the store"
            )
        }
    }

    /// Applies the pending migrations, each in one `BEGIN IMMEDIATE` transaction that re-reads the
    /// record first (another process may have applied it meanwhile). Returns those applied here.
    static func migrate(_ connection: Connection, clock: any DedupClock, logger: Logger) throws -> [SQLiteMigration] {
        let path = connection.path
        var applied = try mapped(path, "reading the schema") { () throws(SQLiteFailure) in try readApplied(connection) }
        try validate(applied, path: path)
        var done: [SQLiteMigration] = []
        for migration in SQLiteMigration.all where !applied.contains(where: { $0.version == migration.version }) {
            let didApply = try mapped(path, "applying migration \(migration)") { () throws(SQLiteFailure) -> Bool in
                do throws(SQLiteFailure) {
                    try connection.execute("BEGIN IMMEDIATE")
                    try connection.execute(tableSQL)
                    applied = try readApplied(connection)
                    if applied.contains(where: { $0.version == migration.version }) {
                        try connection.execute("COMMIT")
                        return false
                    }
                    try connection.execute(migration.sql)
                    let insert = try connection.prepare(
                        "INSERT INTO dedup_schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)"
                    )
                    insert.bind(1, Int64(migration.version))
                    insert.bind(2, migration.name)
                    insert.bind(3, migration.checksum)
                    insert.bind(4, clock.nowMilliseconds())
                    _ = try insert.step()
                    try connection.execute("COMMIT")
                    return true
                } catch {
                    connection.rollbackIfNeeded()
                    throw error
                }
            }
            // Another process may have applied a different text meanwhile: check again.
            try validate(applied, path: path)
            if didApply {
                logger.info(
                    "applied SQLite migration",
                    metadata: ["migration": "\(migration)", "path": "\(path)", "checksum": "\(migration.checksum)"]
                )
                done.append(migration)
            }
        }
        return done
    }

    static func status(_ connection: Connection, checkIntegrity: Bool) throws(SQLiteFailure) -> SQLiteSchemaStatus {
        let applied = try readApplied(connection)
        let versions = Set(applied.map(\.version))
        var integrity: SQLiteIntegrity?
        if checkIntegrity {
            let messages = try connection.texts("PRAGMA quick_check(100)")
            integrity = SQLiteIntegrity(isOK: messages == ["ok"], messages: messages)
        }
        return SQLiteSchemaStatus(
            path: connection.path,
            applied: applied,
            currentVersion: versions.max() ?? 0,
            latestVersion: SQLiteMigration.latestVersion,
            pending: SQLiteMigration.all.filter { !versions.contains($0.version) },
            integrity: integrity
        )
    }

    static func mapped<R>(
        _ path: String,
        _ context: String,
        _ body: () throws(SQLiteFailure) -> R
    ) throws(DedupError) -> R {
        do {
            return try body()
        } catch {
            throw error.dedupError(context, path: path)
        }
    }
}
