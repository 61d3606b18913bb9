import Dedup
import Foundation
import Logging
import PostgresNIO

/// One step of the PostgreSQL schema: a file `Migrations/postgres/NNNN_name.sql` of the
/// repository, shipped inside the library as ``PostgresMigration/all``.
///
/// Pending migrations are applied in version order when a store opens, all in one transaction that
/// holds a transaction-level advisory lock, so several processes starting at once apply each
/// migration once. Each is recorded in the table `dedup_schema_migrations` (version, name,
/// checksum, applied_at) of the store's schema, so a later open can tell whether the database is
/// behind, ahead of, or different from this library.
public struct PostgresMigration: Sendable, Hashable, CustomStringConvertible {
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

    /// The checksum recorded when the migration is applied: `fnv1a64:` and the 16 hex digits of
    /// the 64-bit FNV-1a hash of ``sql``'s UTF-8 bytes (the SQLite store's checksum too).
    public var checksum: String { MigrationChecksum.fnv1a64(sql) }

    /// The highest version this library knows.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    /// `0001_create_records`.
    public var description: String {
        let number = String(version)
        return String(repeating: "0", count: max(0, 4 - number.count)) + number + "_" + name
    }
}

/// A migration as recorded in a database.
public struct PostgresAppliedMigration: Sendable, Hashable {
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
    /// When it was applied (server clock).
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

/// Where a PostgreSQL store's schema stands, for `dedup-inspect check` and operators.
public struct PostgresSchemaStatus: Sendable, Hashable {
    /// The PostgreSQL schema (namespace) holding the dedup tables.
    public var schema: String
    /// The migrations recorded in the database, in version order.
    public var applied: [PostgresAppliedMigration]
    /// The highest applied version (0 for a database without the dedup tables).
    public var currentVersion: Int
    /// The highest version this library knows (``PostgresMigration/latestVersion``).
    public var latestVersion: Int
    /// This library's migrations not yet applied, in the order they would be.
    public var pending: [PostgresMigration]

    /// Creates a status.
    public init(
        schema: String,
        applied: [PostgresAppliedMigration],
        currentVersion: Int,
        latestVersion: Int,
        pending: [PostgresMigration]
    ) {
        self.schema = schema
        self.applied = applied
        self.currentVersion = currentVersion
        self.latestVersion = latestVersion
        self.pending = pending
    }

    /// Why opening the store would fail because of its schema (``/Dedup/DedupError/Code/schemaTooNew``
    /// or ``/Dedup/DedupError/Code/schemaAltered``); `nil` when it can be opened (migrating if pending).
    public var problem: DedupError? {
        do {
            try PostgresMigrationRunner.validate(applied, schema: schema)
            return nil
        } catch {
            return error
        }
    }

    /// Up to date, neither newer nor altered.
    public var isHealthy: Bool { problem == nil && pending.isEmpty }
}

/// Reads, checks and applies migrations on one connection.
enum PostgresMigrationRunner {
    /// The recorded migrations of `names`' schema; empty when the table does not exist.
    static func readApplied(
        _ connection: PostgresConnection,
        _ names: TableNames,
        logger: Logger
    ) async throws -> [PostgresAppliedMigration] {
        let exists =
            try await connection.query(
                "SELECT to_regclass(\(names.migrationsRegclass)) IS NOT NULL",
                logger: logger
            ).collect().first?.decode(Bool.self) ?? false
        guard exists else { return [] }
        let rows = try await connection.query(
            "SELECT version, name, checksum, applied_at FROM \(unescaped: names.migrations) ORDER BY version",
            logger: logger
        ).collect()
        let known = Dictionary(uniqueKeysWithValues: PostgresMigration.all.map { ($0.version, $0) })
        return try rows.map { row in
            let (version, name, checksum, appliedAt) = try row.decode((Int64, String, String, Int64).self)
            let status: PostgresAppliedMigration.Status
            if let migration = known[Int(version)] {
                status = migration.checksum == checksum ? .matches : .altered
            } else {
                status = Int(version) > PostgresMigration.latestVersion ? .unknown : .altered
            }
            return PostgresAppliedMigration(
                version: Int(version),
                name: name,
                checksum: checksum,
                appliedAt: Date(millisecondsSince1970: appliedAt),
                status: status
            )
        }
    }

    /// Refuses a schema newer than the library or an altered applied migration.
    static func validate(_ applied: [PostgresAppliedMigration], schema: String) throws(DedupError) {
        let current = applied.map(\.version).max() ?? 0
        let latest = PostgresMigration.latestVersion
        if current > latest {
            throw DedupError(
                .schemaTooNew,
                "the PostgreSQL dedup schema \(schema.debugDescription) has version \(current), newer than version \(latest), "
                    + "the latest this swift-dedup knows: upgrade swift-dedup to use it"
            )
        }
        if let altered = applied.first(where: { $0.status != .matches }) {
            let ours = PostgresMigration.all.first { $0.version == altered.version }
            throw DedupError(
                .schemaAltered,
                "migration \(altered.version) (\(altered.name)) applied to the PostgreSQL dedup schema \(schema.debugDescription) "
                    + "has checksum \(altered.checksum), but this swift-dedup's is \(ours?.checksum ?? "unknown"): "
                    + "the applied migration was changed; restore it or recreate the tables"
            )
        }
    }

    static func status(
        _ connection: PostgresConnection,
        _ names: TableNames,
        logger: Logger
    ) async throws -> PostgresSchemaStatus {
        let applied = try await readApplied(connection, names, logger: logger)
        let versions = Set(applied.map(\.version))
        return PostgresSchemaStatus(
            schema: names.schema,
            applied: applied,
            currentVersion: versions.max() ?? 0,
            latestVersion: PostgresMigration.latestVersion,
            pending: PostgresMigration.all.filter { !versions.contains($0.version) }
        )
    }

    /// Applies the pending migrations in one transaction under an advisory lock of the schema, so
    /// concurrent openers wait for each other and find the work done. Refuses a newer or altered
    /// schema before and after taking the lock. Returns the migrations applied here.
    static func migrate(
        _ connection: PostgresConnection,
        _ names: TableNames,
        logger: Logger
    ) async throws -> [PostgresMigration] {
        let before = try await readApplied(connection, names, logger: logger)
        try validate(before, schema: names.schema)
        if before.count == PostgresMigration.all.count { return [] }
        return try await PostgresTransactionRunner.run(connection, logger: logger) { connection in
            try await connection.query(
                "SELECT pg_advisory_xact_lock(hashtextextended(\("swift-dedup migrations " + names.schema), 0))",
                logger: logger
            )
            try await connection.query("CREATE SCHEMA IF NOT EXISTS \(unescaped: names.quotedSchema)", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS \(unescaped: names.migrations) (version bigint PRIMARY KEY, name text NOT NULL, \
                checksum text NOT NULL, applied_at bigint NOT NULL)
                """,
                logger: logger
            )
            let applied = try await readApplied(connection, names, logger: logger)
            try validate(applied, schema: names.schema)
            // The migration texts name their tables unqualified: they land in the store's schema.
            try await connection.query("SELECT set_config('search_path', \(names.quotedSchema), true)", logger: logger)
            var done: [PostgresMigration] = []
            for migration in PostgresMigration.all where !applied.contains(where: { $0.version == migration.version }) {
                try await connection.query(PostgresQuery(unsafeSQL: migration.sql), logger: logger)
                try await connection.query(
                    """
                    INSERT INTO \(unescaped: names.migrations) (version, name, checksum, applied_at) VALUES \
                    (\(Int64(migration.version)), \(migration.name), \(migration.checksum), \
                    floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint)
                    """,
                    logger: logger
                )
                logger.info(
                    "applied PostgreSQL migration",
                    metadata: [
                        "migration": "\(migration)", "schema": "\(names.schema)", "checksum": "\(migration.checksum)",
                    ]
                )
                done.append(migration)
            }
            return done
        }
    }
}

/// Runs a body in `BEGIN` … `COMMIT` on one connection, rolling back when it throws, and
/// rethrowing the body's own error (postgres-nio's `withTransaction` wraps it).
enum PostgresTransactionRunner {
    static func run<Value: Sendable>(
        _ connection: PostgresConnection,
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Value
    ) async throws -> Value {
        try await connection.query("BEGIN", logger: logger)
        do {
            let value = try await body(connection)
            try await connection.query("COMMIT", logger: logger)
            return value
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
