import CSQLite
import Dedup
import DedupPostgres
import DedupRedis
import DedupSQLite
import DedupStoreLocator
import Foundation
import Logging

/// The store-specific parts of `dedup-inspect`: opening without creating, schema status and
/// migration (SQLite), connectivity (Redis), counting expired records.
enum StoreAccess {
    /// Opens an existing store. A SQLite file that does not exist is reported as unreachable rather
    /// than silently created (a mistyped path must not look like an empty store), and one whose
    /// schema is not current is refused rather than migrated: an inspection never writes a schema
    /// into a file, someone else's database included (`migrate` does that). `readOnly` opens SQLite
    /// for reading only (``SQLiteDedupStore/Configuration/readOnly``).
    static func open(_ location: StoreLocation, readOnly: Bool = false) async throws -> any DedupStore {
        if case .postgres(let url) = location {
            // Like SQLite: a schema behind this tool's is refused, never migrated by an inspection.
            return try await PostgresDedupStore(url: url, configuration: .init(appliesMigrations: false), logger: quiet)
        }
        if case .sqlite(let path) = location {
            try requireFile(path)
            let status = try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: false)
            if !status.isNewerThanLibrary && status.altered.isEmpty && !status.pending.isEmpty {
                if status.currentVersion == 0 {
                    throw DedupError(
                        .schemaOutdated,
                        "SQLite file \(path.debugDescription) has no dedup schema: check the path (a consumer's store has one); dedup-inspect migrate would create it there"
                    )
                }
                throw DedupError(
                    .schemaOutdated,
                    "SQLite file \(path.debugDescription) has schema version \(status.currentVersion); this dedup-inspect expects version \(status.latestVersion) (pending: \(status.pending.map(\.name).joined(separator: ", "))). Run dedup-inspect migrate first, or the dedup-inspect of the consumers' version"
                )
            }
        }
        return try location.open(sqlite: .init(readOnly: readOnly))
    }

    static func requireFile(_ path: String) throws(DedupError) {
        var status = stat()
        if stat(path, &status) != 0 {
            let number = errno
            throw DedupError(
                .storeUnavailable,
                "cannot open SQLite file \(path.debugDescription): \(String(cString: strerror(number))) (dedup-inspect migrate creates a new store)",
                underlyingError: POSIXError.number(number)
            )
        }
    }

    /// How many records are expired but not yet deleted (what `purge` would delete), by namespace.
    ///
    /// SQLite: one `count(*)` per namespace on `expires_at`, through the store's own connection
    /// (read-only when the command opened it so). Redis expires records by itself (TTLs), so there
    /// is never anything left to purge; the server is still asked, so that a wrong address or
    /// password fails here as it would with `--yes`.
    static func countExpired(in store: any DedupStore) async throws -> [String: Int] {
        if let redis = store as? RedisDedupStore {
            _ = try await redis.ping()
            return [:]
        }
        if let postgres = store as? PostgresDedupStore { return try await postgres.expiredCounts() }
        return try await (store as? SQLiteDedupStore)?.expiredCounts() ?? [:]
    }

    /// Connectivity, latency and schema (SQLite) or the server's persistence and eviction settings
    /// (Redis); changes nothing.
    static func check(_ location: StoreLocation, roundTrips: Int, integrity: Bool) async throws -> CheckReport {
        let clock = ContinuousClock()
        switch location {
        case .sqlite(let path):
            try requireFile(path)
            let status = try await Task.detached {
                try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: integrity)
            }.value
            let schema = schemaReport(status)
            var details: [(String, JSONValue)] = []
            if let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                let size = attributes[.size] as? Int
            {
                details.append(("file_bytes", .int(Int64(size))))
            }
            if let integrity = status.integrity {
                details.append(
                    ("integrity", .string(integrity.isOK ? "ok" : integrity.messages.joined(separator: "; ")))
                )
            }
            // A store opened read-only needs a current schema: only time round trips on one.
            var times: [Int64] = []
            if schema.status == "current" {
                let store = try SQLiteDedupStore(path: path, configuration: .init(readOnly: true))
                defer { store.close() }
                let probe = RecordID(uncheckedNamespace: "dedup-inspect", key: "check")
                for _ in 0..<roundTrips {
                    times.append(try await clock.measure { _ = try await store.record(for: probe) }.wholeMicroseconds)
                }
            }
            var report = CheckReport(backend: "sqlite", roundTripMicroseconds: times, schema: schema, details: details)
            if let integrity = status.integrity, !integrity.isOK { report.integrityFailed = true }
            return report
        case .redis(let url):
            let store = try RedisDedupStore(url: url)
            var times: [Int64] = []
            for _ in 0..<roundTrips {
                times.append(try await store.ping().wholeMicroseconds)
            }
            // A cluster's every node, else the one server.
            let nodes = try await store.clusterNodeSettings()
            let assessment: (details: [(String, String)], json: JSONValue, warnings: [String], notices: [String])
            if nodes.isEmpty {
                let single = RedisSettingsCheck(try await store.serverSettings())
                assessment = (single.details, single.json, single.warnings, single.notices)
            } else {
                let cluster = RedisClusterCheck(nodes)
                assessment = (cluster.details, cluster.json, cluster.warnings, cluster.notices)
            }
            await store.close()
            var report = CheckReport(
                backend: "redis",
                roundTripMicroseconds: times,
                schema: nil,
                details: [("endpoint", .string(location.redactingSecrets(in: store.endpoint.description)))]
                    + assessment.details.map { ($0.0, JSONValue.string($0.1)) }
            )
            report.server = assessment.json
            report.warnings = assessment.warnings
            report.notices = assessment.notices
            return report
        case .postgres(let url):
            let status = try await PostgresDedupStore.schemaStatus(url: url)
            // Time round trips only on a current schema, as for SQLite.
            var times: [Int64] = []
            if status.isHealthy {
                let store = try await PostgresDedupStore(
                    url: url,
                    configuration: .init(appliesMigrations: false),
                    logger: quiet
                )
                defer { store.close() }
                let probe = RecordID(uncheckedNamespace: "dedup-inspect", key: "check")
                for _ in 0..<roundTrips {
                    times.append(try await clock.measure { _ = try await store.record(for: probe) }.wholeMicroseconds)
                }
            }
            return CheckReport(
                backend: "postgres",
                roundTripMicroseconds: times,
                schema: schemaReport(status),
                details: [("schema", .string(status.schema))]
            )
        }
    }

    /// The shared vocabulary of schema reports, for a PostgreSQL schema.
    static func schemaReport(_ status: PostgresSchemaStatus) -> SchemaReport {
        schemaReport(
            current: status.currentVersion,
            latest: status.latestVersion,
            pending: status.pending.map(\.description),
            altered: status.applied.contains { $0.status != .matches },
            problem: status.problem
        )
    }

    /// What the store's own log would say twice: the commands report for themselves.
    static let quiet = Logger(label: "dedup-inspect.store", factory: { _ in SwiftLogNoOpLogHandler() })

    static func schemaReport(_ status: SQLiteSchemaStatus) -> SchemaReport {
        schemaReport(
            current: status.currentVersion,
            latest: status.latestVersion,
            pending: status.pending.map(\.description),
            altered: !status.altered.isEmpty,
            problem: status.problem
        )
    }

    /// `too_new`, `altered`, `behind` or `current`, with the versions and the problem's words.
    static func schemaReport(
        current: Int,
        latest: Int,
        pending: [String],
        altered: Bool,
        problem: DedupError?
    ) -> SchemaReport {
        let state: String
        if current > latest {
            state = "too_new"
        } else if altered {
            state = "altered"
        } else if !pending.isEmpty {
            state = "behind"
        } else {
            state = "current"
        }
        return SchemaReport(version: current, latest: latest, pending: pending, status: state, detail: problem?.message)
    }

    /// Applies pending migrations (SQLite, creating the file); Redis has no schema.
    static func migrate(_ location: StoreLocation) async throws -> MigrateReport {
        switch location {
        case .sqlite(let path):
            let before: Int? =
                FileManager.default.fileExists(atPath: path)
                ? try await Task.detached {
                    try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: false).currentVersion
                }.value
                : 0
            // The report is the human line; the migration's own log line would repeat it raw.
            let quiet = Logger(label: "dedup-inspect.migrate", factory: { _ in SwiftLogNoOpLogHandler() })
            let applied = try await Task.detached { try SQLiteDedupStore.migrate(path: path, logger: quiet) }.value
            let after = try await Task.detached {
                try SQLiteDedupStore.schemaStatus(path: path, checkIntegrity: false).currentVersion
            }.value
            return MigrateReport(
                backend: "sqlite",
                before: before,
                after: after,
                applied: applied.map(\.description)
            )
        case .redis(let url):
            // Connect once, so a wrong address or password still fails here.
            let store = try RedisDedupStore(url: url)
            _ = try await store.ping()
            await store.close()
            return MigrateReport(backend: "redis", before: nil, after: nil, applied: [])
        case .postgres(let url):
            let before = try await PostgresDedupStore.schemaStatus(url: url).currentVersion
            let store = try await PostgresDedupStore(
                url: url,
                configuration: .init(appliesMigrations: false),
                logger: quiet,
                checkingSchema: false
            )
            defer { store.close() }
            let applied = try await store.applyMigrations()
            let after = try await store.schemaStatus().currentVersion
            return MigrateReport(backend: "postgres", before: before, after: after, applied: applied.map(\.description))
        }
    }
}

extension Duration {
    /// Whole microseconds (rounded down).
    var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }
}
