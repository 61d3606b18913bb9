import Dedup

/// Where a Redis server is and how to log in: parsed from a URL, printable without its password.
///
/// Accepted URLs:
/// - `redis://[user:password@]host[:port][/db]`: TCP; port 6379 and database 0 by default.
///   `redis://:password@host` logs in with a password only (`requirepass`), `user:password@` as an
///   ACL user. IPv6 hosts go in brackets: `redis://[::1]:6379`.
/// - `unix://[user:password@]/path/to/redis.sock[?db=N]`: a Unix socket. The user-info part sits
///   before the absolute path (`unix://:secret@/run/redis.sock?db=2`), as in the TCP form.
///
/// User and password may be percent-encoded (`%40` for `@`, `%3A` for `:`, `%2F` for `/`).
/// `rediss://` (TLS) is refused: the system hiredis 0.14 has no TLS support.
public struct RedisEndpoint: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// How to reach the server.
    public enum Transport: Hashable, Sendable {
        /// A TCP host (name or address) and port.
        case tcp(host: String, port: Int)
        /// A Unix domain socket path.
        case unixSocket(path: String)
    }

    /// How to reach the server.
    public var transport: Transport
    /// The ACL user to log in as; `nil` with a password means the `default` user (`AUTH password`).
    public var username: String?
    /// The password; never printed by ``redactedDescription``, `description` or `dump`.
    public var password: String?
    /// The logical database to `SELECT` (0 by default).
    public var database: Int

    /// The port used when a `redis://` URL names none.
    public static let defaultPort = 6379

    /// Creates an endpoint from its parts.
    public init(transport: Transport, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.transport = transport
        self.username = username
        self.password = password
        self.database = database
    }

    /// Parses a `redis://` or `unix://` URL.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` saying what is wrong; the message never
    ///   contains the password.
    public init(url: String) throws(DedupError) {
        func invalid(_ why: String) -> DedupError {
            DedupError(.invalidConfiguration, "invalid Redis URL \(Self.redact(url).debugDescription): \(why)")
        }
        guard let schemeEnd = url.range(of: "://") else {
            throw invalid("expected redis://host:port/db or unix:///path/to/redis.sock")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let rest = url[schemeEnd.upperBound...]
        switch scheme {
        case "redis", "unix":
            break
        case "rediss":
            throw invalid(
                "TLS (rediss://) is not supported: the system hiredis 0.14 has no TLS; reach the server through a TLS tunnel (stunnel, spiped) with redis://"
            )
        default:
            throw invalid("unknown scheme \(scheme.debugDescription); use redis:// or unix://")
        }

        // Authority: everything up to the first "/" (the path), "?" or "#".
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var afterAuthority = rest[authorityEnd...]
        if afterAuthority.hasPrefix("#") { throw invalid("fragments (#) are not allowed") }

        var username: String?
        var password: String?
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = userInfo[..<colon]
                let pass = userInfo[userInfo.index(after: colon)...]
                guard let decodedUser = Self.percentDecode(user), let decodedPass = Self.percentDecode(pass) else {
                    throw invalid("the user or password has a malformed %-escape")
                }
                username = decodedUser.isEmpty ? nil : decodedUser
                password = decodedPass
            } else {
                // "redis://secret@host" is ambiguous; Redis clients read it as a password-only login.
                guard let decoded = Self.percentDecode(userInfo) else {
                    throw invalid("the password has a malformed %-escape")
                }
                password = decoded
            }
            if password?.isEmpty == true { throw invalid("the password is empty") }
        }

        // Query: only "db=N" is known.
        var queryDatabase: Int?
        if let question = afterAuthority.firstIndex(of: "?") {
            let query = afterAuthority[afterAuthority.index(after: question)...]
            afterAuthority = afterAuthority[..<question]
            for item in query.split(separator: "&") {
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0] == "db" else {
                    throw invalid("unknown query parameter \(String(parts[0]).debugDescription); only db=N is known")
                }
                guard let value = Int(parts[1]), value >= 0 else {
                    throw invalid("db must be a non-negative integer, not \(String(parts[1]).debugDescription)")
                }
                queryDatabase = value
            }
        }

        if scheme == "unix" {
            guard authority.isEmpty else {
                throw invalid("a unix:// URL has no host: write unix:///path/to/redis.sock (three slashes)")
            }
            guard afterAuthority.hasPrefix("/"), afterAuthority.count > 1 else {
                throw invalid("a unix:// URL needs an absolute socket path, as in unix:///run/redis/redis.sock")
            }
            guard let path = Self.percentDecode(afterAuthority) else {
                throw invalid("the socket path has a malformed %-escape")
            }
            self.init(transport: .unixSocket(path: path), username: username, password: password, database: queryDatabase ?? 0)
            return
        }

        // redis://host[:port][/db]
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid("an IPv6 host lacks its closing ]") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let tail = authority[authority.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":") else { throw invalid("expected :port after the IPv6 host") }
                portText = tail.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw invalid("the host is missing") }
        var port = Self.defaultPort
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw invalid("the port must be a number from 1 to 65535, not \(String(portText).debugDescription)")
            }
            port = value
        }
        var database = 0
        let path = afterAuthority.drop(while: { $0 == "/" })
        if !path.isEmpty {
            guard let value = Int(path), value >= 0 else {
                throw invalid("the path must be a database number (/0, /1, ...), not \(String(afterAuthority).debugDescription)")
            }
            database = value
        }
        if let queryDatabase {
            guard path.isEmpty || queryDatabase == database else {
                throw invalid("the database is given twice, differently")
            }
            database = queryDatabase
        }
        self.init(transport: .tcp(host: String(host), port: port), username: username, password: password, database: database)
    }

    /// The endpoint as a URL with the password replaced by `***`: safe to print and log.
    public var redactedDescription: String {
        var userInfo = ""
        if password != nil {
            userInfo = "\(username ?? ""):***@"
        } else if let username {
            userInfo = "\(username)@"
        }
        switch transport {
        case .tcp(let host, let port):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            return "redis://\(userInfo)\(shownHost):\(port)/\(database)"
        case .unixSocket(let path):
            return "unix://\(userInfo)\(path)" + (database == 0 ? "" : "?db=\(database)")
        }
    }

    /// ``redactedDescription``.
    public var description: String { redactedDescription }

    /// ``redactedDescription``.
    public var debugDescription: String { "RedisEndpoint(\(redactedDescription))" }

    /// A mirror without the password, so `dump` cannot print it either.
    public var customMirror: Mirror {
        Mirror(self, children: ["url": redactedDescription], displayStyle: .struct)
    }

    /// Replaces the password part of a URL's user info by `***`, for messages about malformed URLs.
    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        let userInfo = rest[..<at]
        let user = userInfo.firstIndex(of: ":").map { userInfo[..<$0] } ?? ""
        return String(url[..<schemeEnd.upperBound]) + user + ":***" + rest[at...]
    }

    private static func percentDecode(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
