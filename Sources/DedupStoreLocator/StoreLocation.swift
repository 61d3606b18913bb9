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

    /// Replaces `secret`s of the location (a URL's password, as written and percent-decoded) by
    /// `***` in any text, such as an error message a store or a library built from the URL: a last
    /// line of defence so that no output of a command ever carries the password.
    public func redactingSecrets(in text: String) -> String {
        var text = text
        for secret in secrets where !secret.isEmpty {
            text = text.replacingOccurrences(of: secret, with: "***")
        }
        return text
    }

    /// The secrets inside the location: a Redis URL's password (and `password=` query values), as
    /// written and percent-decoded, longest first.
    var secrets: [String] {
        guard case .redis(let url) = self else { return [] }
        var found: [String] = []
        if let (range, _) = Self.userInfoPassword(url) { found.append(String(url[range])) }
        found += Self.secretQueryValues(url).map { String(url[$0]) }
        found += found.compactMap { $0.removingPercentEncoding }
        return Array(Set(found)).sorted { $0.count > $1.count }
    }

    /// Replaces the password of a URL's user-info part, and the values of `password`/`pass`/`auth`
    /// query items, by `***`.
    ///
    /// The user info ends at the *last* `@` before the query, so a password holding `/` or `@` is
    /// still hidden; text before that `@` counts as user info only if it has a `:` (a unix socket
    /// path with an `@` in it is left alone).
    static func redact(_ url: String) -> String {
        var ranges: [Range<String.Index>] = []
        if let (range, _) = userInfoPassword(url) { ranges.append(range) }
        ranges += secretQueryValues(url)
        var text = url
        for range in ranges.sorted(by: { $0.lowerBound > $1.lowerBound }) {
            text.replaceSubrange(range, with: "***")
        }
        return text
    }

    /// Where the user-info password is, and the user info's end.
    private static func userInfoPassword(_ url: String) -> (Range<String.Index>, String.Index)? {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        let queryStart = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<queryStart].lastIndex(of: "@") else { return nil }
        let userInfo = rest[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return nil }
        return (userInfo.index(after: colon)..<at, at)
    }

    /// The values of query items that hold secrets.
    private static func secretQueryValues(_ url: String) -> [Range<String.Index>] {
        guard let question = url.firstIndex(of: "?") else { return [] }
        let queryEnd = url[question...].firstIndex(of: "#") ?? url.endIndex
        var ranges: [Range<String.Index>] = []
        var itemStart = url.index(after: question)
        while itemStart < queryEnd {
            let itemEnd = url[itemStart..<queryEnd].firstIndex(of: "&") ?? queryEnd
            if let equals = url[itemStart..<itemEnd].firstIndex(of: "=") {
                let name = url[itemStart..<equals].lowercased()
                if ["password", "pass", "auth", "requirepass", "secret"].contains(name) {
                    ranges.append(url.index(after: equals)..<itemEnd)
                }
            }
            itemStart = itemEnd < queryEnd ? url.index(after: itemEnd) : queryEnd
        }
        return ranges.filter { !$0.isEmpty }
    }
}
