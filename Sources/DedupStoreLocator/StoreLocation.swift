import Dedup
import DedupPostgres
import DedupRedis
import DedupSQLite
import Foundation

/// Where a store is, in the spelling every swift-dedup command accepts with `--store`:
/// `sqlite:PATH` (an embedded SQLite file), a Redis URL (`redis://[user:password@]host:port/db`,
/// `unix:///path/to/redis.sock`) or a PostgreSQL URL
/// (`postgres://user:password@host:port/database?schema=…`).
public enum StoreLocation: Hashable, Sendable, CustomStringConvertible {
    /// An SQLite file.
    case sqlite(path: String)
    /// A Redis server.
    case redis(url: String)
    /// A PostgreSQL database.
    case postgres(url: String)

    /// Parses `--store`'s value.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` naming the accepted spellings.
    public init(parsing text: String) throws(DedupError) {
        if text.hasPrefix("sqlite:") {
            var path = String(text.dropFirst("sqlite:".count))
            // Accept sqlite:///abs/path and sqlite://rel as well as sqlite:PATH.
            if path.hasPrefix("//") { path.removeFirst(2) }
            guard !path.isEmpty else {
                throw DedupError(.invalidConfiguration, "sqlite: needs a file path, as in sqlite:./dedup.sqlite")
            }
            self = .sqlite(path: path)
        } else if text.hasPrefix("redis://") || text.hasPrefix("rediss://") || text.hasPrefix("unix://") {
            self = .redis(url: text)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else {
            throw DedupError(
                .invalidConfiguration,
                "unknown store \(Self.redact(text).debugDescription): use sqlite:PATH, redis://host:port/db, "
                    + "unix:///path/to/redis.sock or postgres://user:password@host:port/database"
            )
        }
    }

    /// Opens the store (SQLite: opening the file and applying migrations; Redis: parsing the URL,
    /// connecting on first use). A PostgreSQL store connects and migrates as it opens, which takes
    /// ``open(sqlite:redis:postgres:)``, the asynchronous form.
    ///
    /// - Throws: the store's error; ``/Dedup/DedupError/Code/invalidConfiguration`` for a PostgreSQL URL.
    public func open(
        sqlite: SQLiteDedupStore.Configuration = .init(),
        redis: RedisDedupStore.Configuration = .init()
    ) throws
        -> any DedupStore
    {
        switch self {
        case .sqlite(let path):
            return try SQLiteDedupStore(path: path, configuration: sqlite)
        case .redis(let url):
            return try RedisDedupStore(url: url, configuration: redis)
        case .postgres:
            throw DedupError(
                .invalidConfiguration,
                "a PostgreSQL store connects as it opens: open \(description) with `await open(postgres:)`"
            )
        }
    }

    /// Opens the store, whichever it is: a PostgreSQL store with a client of its own, logging in
    /// and applying pending migrations; the others as ``open(sqlite:redis:)``.
    public func open(
        sqlite: SQLiteDedupStore.Configuration = .init(),
        redis: RedisDedupStore.Configuration = .init(),
        postgres: PostgresDedupStore.Configuration
    ) async throws -> any DedupStore {
        if case .postgres(let url) = self {
            return try await PostgresDedupStore(url: url, configuration: postgres)
        }
        return try open(sqlite: sqlite, redis: redis)
    }

    /// The location with any password replaced by `***`: safe to print and log. What counts as a
    /// password is decided by ``URLCredentials``, the rules the Redis URL parser logs in with.
    public var description: String {
        switch self {
        case .sqlite(let path): return "sqlite:\(path)"
        case .redis(let url), .postgres(let url): return Self.redact(url)
        }
    }

    /// Replaces `secret`s of the location (a URL's password, as written and percent-decoded) by
    /// `***` in any text, such as an error message a store or a library built from the URL: a last
    /// line of defence so that no output of a command ever carries the password.
    public func redactingSecrets(in text: String) -> String {
        URLCredentials.removing(secrets, from: text)
    }

    /// The secrets inside the location: a Redis or PostgreSQL URL's password (and `password=` query
    /// values), as written and percent-decoded, longest first.
    var secrets: [String] {
        switch self {
        case .sqlite: return []
        case .redis(let url), .postgres(let url): return URLCredentials.secrets(in: url)
        }
    }

    /// ``URLCredentials/redacting(_:)``: the password of a URL's user info, and the values of
    /// `password`/`pass`/`auth` query items, replaced by `***`.
    static func redact(_ url: String) -> String {
        URLCredentials.redacting(url)
    }
}
