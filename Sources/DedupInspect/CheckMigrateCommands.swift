import ArgumentParser
import Dedup
import Foundation

/// `check`: can the store be reached, how long a round trip takes, and is its schema current.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract:
            "Check connectivity, round-trip latency, the schema (SQLite) or persistence and eviction (Redis); changes nothing.",
        discussion: """
            For Redis it also reports the server version, persistence (AOF, RDB snapshots) and the \
            eviction policy. Exits 0 when the store is reachable and its schema is current, 3 when it \
            cannot be reached, 5 when migrations are pending (run migrate), the schema is newer than \
            this tool, or an applied migration was altered, 4 for any other store error, 6 when a Redis \
            setting can lose records (an evicting maxmemory-policy, neither AOF nor RDB); what the \
            server will not tell is noted without failing. A SQLite file that does not exist is \
            unreachable (check never creates one).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Round trips to time; the median is reported.")
    var roundTrips = 5

    @Flag(help: "Also run SQLite's quick_check over the whole file (reads all of it); a failure exits 4.")
    var integrity = false

    func validate() throws {
        if roundTrips < 1 || roundTrips > 1000 { throw ValidationError("--round-trips must be between 1 and 1000") }
    }

    func run() async throws {
        try await Session.run(global, opening: .none) { session, _ in
            let report = try await StoreAccess.check(session.location, roundTrips: roundTrips, integrity: integrity)
            if session.json {
                session.document(report.json(store: session.location.description))
            } else {
                session.out.write(report.text(store: session.location.description))
            }
            return report.status
        }
    }
}

/// `migrate`: bring a SQLite store's schema up to date (creating the file if needed).
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending schema migrations (SQLite; creates the file if missing). Redis needs none.",
        discussion: """
            Applies Migrations/sqlite/NNNN_*.sql in order, each recorded with its version and checksum. \
            Consumers apply migrations on open too; this command lets an operator do it ahead of a \
            deployment. A schema newer than this tool, or an altered applied migration, is refused (exit 5).
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await Session.run(global, opening: .none) { session, _ in
            let report = try await StoreAccess.migrate(session.location)
            if session.json {
                session.document(report.json(store: session.location.description))
            } else {
                session.out.write(report.text(store: session.location.description))
            }
            return .success
        }
    }
}

/// A schema's state as `check` and `migrate` report it.
struct SchemaReport: Sendable {
    /// The current schema version (0: empty file).
    var version: Int
    /// The newest version this tool knows.
    var latest: Int
    /// Migrations not yet applied, by name.
    var pending: [String]
    /// `current`, `behind`, `too_new` or `altered`.
    var status: String
    /// A sentence for people when not current.
    var detail: String?

    var json: JSONValue {
        .object([
            ("version", .int(Int64(version))),
            ("latest", .int(Int64(latest))),
            ("status", .string(status)),
            ("pending", .array(pending.map { .string($0) })),
            ("detail", .string(detail)),
        ])
    }
}

/// What `check` found.
struct CheckReport: Sendable {
    /// `sqlite` or `redis`.
    var backend: String
    /// Round-trip times in microseconds, in the order measured.
    var roundTripMicroseconds: [Int64]
    /// The schema, for stores that have one.
    var schema: SchemaReport?
    /// Anything else worth saying (server version, file size), typed for JSON.
    var details: [(String, JSONValue)] = []
    /// SQLite's quick_check found damage.
    var integrityFailed = false
    /// A Redis server's version and settings (``RedisSettingsCheck``).
    var server: JSONValue?
    /// Settings that can lose dedup records: `check` exits 6.
    var warnings: [String] = []
    /// What could not be told, said without failing.
    var notices: [String] = []

    var medianMicroseconds: Int64 {
        let sorted = roundTripMicroseconds.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }

    var status: ExitStatus {
        if let schema, schema.status != "current" { return .schemaMismatch }
        if integrityFailed { return .storeError }
        return warnings.isEmpty ? .success : .warnings
    }

    func json(store: String) -> JSONValue {
        .object([
            ("store", .string(store)),
            ("backend", .string(backend)),
            ("reachable", .bool(true)),
            ("round_trips", .int(Int64(roundTripMicroseconds.count))),
            ("latency_ms", roundTripMicroseconds.isEmpty ? .null : .number(Double(medianMicroseconds) / 1000)),
            ("latency_us", roundTripMicroseconds.isEmpty ? .null : .int(medianMicroseconds)),
            ("latency_max_us", roundTripMicroseconds.max().map { .int($0) } ?? .null),
            ("schema", schema?.json ?? .null),
            ("details", .object(details)),
            ("server", server ?? .null),
            ("warnings", .array(warnings.map { .string($0) })),
            ("notices", .array(notices.map { .string($0) })),
            ("ok", .bool(status == .success)),
        ])
    }

    func text(store: String) -> String {
        var lines: [(String, String)] = [
            ("store", store),
            ("backend", backend),
            ("reachable", "yes"),
        ]
        if roundTripMicroseconds.isEmpty {
            lines.append(("round trip", "not measured (the schema is not current)"))
        } else {
            lines.append(
                (
                    "round trip",
                    "\(Self.milliseconds(medianMicroseconds)) ms (median of \(roundTripMicroseconds.count), max \(Self.milliseconds(roundTripMicroseconds.max() ?? 0)) ms)"
                )
            )
        }
        if let schema {
            var text = "version \(schema.version) of \(schema.latest): \(schema.status)"
            if !schema.pending.isEmpty {
                text += " (pending: \(schema.pending.joined(separator: ", ")); run dedup-inspect migrate)"
            }
            lines.append(("schema", text))
            if let detail = schema.detail { lines.append(("", detail)) }
        }
        lines += details.map { ($0.0, $0.1.plainText) }
        lines += warnings.map { ("warning", $0) } + notices.map { ("note", $0) }
        switch status {
        case .success: lines.append(("result", "ok"))
        case .schemaMismatch: lines.append(("result", "schema mismatch"))
        case .warnings: lines.append(("result", "reachable, but its settings can lose records"))
        default: lines.append(("result", "integrity check failed"))
        }
        return Self.labelled(lines)
    }

    static func milliseconds(_ microseconds: Int64) -> String {
        let thousandths = microseconds % 1000
        return "\(microseconds / 1000)." + String(repeating: "0", count: 3 - String(thousandths).count)
            + String(thousandths)
    }

    static func labelled(_ lines: [(String, String)]) -> String {
        let width = (lines.map(\.0.count).max() ?? 0) + 2
        return lines.map { label, value in
            (label.isEmpty ? "" : label + ":").padding(toLength: width, withPad: " ", startingAt: 0) + value
        }.joined(separator: "\n") + "\n"
    }
}

/// What `migrate` did.
struct MigrateReport: Sendable {
    var backend: String
    var before: Int?
    var after: Int?
    var applied: [String]

    func json(store: String) -> JSONValue {
        .object([
            ("store", .string(store)),
            ("backend", .string(backend)),
            ("version_before", .int(before)),
            ("version_after", .int(after)),
            ("applied", .array(applied.map { .string($0) })),
        ])
    }

    func text(store: String) -> String {
        guard let before, let after else {
            return "\(store): \(backend) stores have no schema to migrate\n"
        }
        if applied.isEmpty { return "\(store): schema version \(after) is current; nothing to apply\n" }
        return "\(store): applied \(applied.joined(separator: ", ")) (version \(before) -> \(after))\n"
    }
}
