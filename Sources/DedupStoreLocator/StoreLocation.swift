import Dedup
import DedupRedis
import DedupSQLite
import Foundation

/// Where a store is, in the spelling every swift-dedup command accepts with `--store`:
/// `sqlite:PATH` (an embedded SQLite file) or a Redis URL (`redis://[user:password@]host:port/db`,
/// `unix:///path/to/redis.sock`).
public enum StoreLocation: Hashable, Sendable, CustomStringConvertible {
    /// An SQLite file.
    case sqlite(path: String)
    /// A Redis server.
    case redis(url: String)

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
        } else {
            throw DedupError(
                .invalidConfiguration,
                "unknown store \(Self.redact(text).debugDescription): use sqlite:PATH, redis://host:port/db or unix:///path/to/redis.sock"
            )
        }
    }

    /// Opens the store (SQLite: opening the file and applying migrations; Redis: parsing the URL,
    /// connecting on first use).
    public func open(sqlite: SQLiteDedupStore.Configuration = .init(), redis: RedisDedupStore.Configuration = .init()) throws
        -> any DedupStore
    {
        switch self {
        case .sqlite(let path):
            return try SQLiteDedupStore(path: path, configuration: sqlite)
        case .redis(let url):
            return try RedisDedupStore(url: url, configuration: redis)
        }
    }

    /// The location with any password replaced by `***`: safe to print and log.
    public var description: String {
        switch self {
        case .sqlite(let path): return "sqlite:\(path)"
        case .redis(let url): return Self.redact(url)
        }
    }

    /// Replaces the password of a URL's user-info part by `***`.
    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        let userInfo = rest[..<at]
        let user = userInfo.firstIndex(of: ":").map { userInfo[..<$0] } ?? userInfo
        return String(url[..<schemeEnd.upperBound]) + user + ":***" + rest[at...]
    }
}
