import Dedup

/// The store's tables, qualified by its PostgreSQL schema and quoted, for the SQL texts.
struct TableNames: Sendable, Hashable {
    /// The schema's name, as configured.
    let schema: String
    /// The schema's name as a quoted identifier.
    let quotedSchema: String
    /// `"schema".dedup_records`.
    let records: String
    /// `"schema".dedup_schema_migrations`.
    let migrations: String
    /// The migrations table's name as `to_regclass` reads it.
    let migrationsRegclass: String

    init(schema: String) throws(DedupError) {
        guard !schema.isEmpty, schema.utf8.count <= 63, !schema.utf8.contains(0) else {
            throw DedupError(
                .invalidConfiguration,
                "the PostgreSQL schema name \(schema.debugDescription) must be 1 to 63 bytes without NUL"
            )
        }
        self.schema = schema
        quotedSchema = "\"" + schema.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        records = quotedSchema + ".dedup_records"
        migrations = quotedSchema + ".dedup_schema_migrations"
        migrationsRegclass = migrations
    }
}
