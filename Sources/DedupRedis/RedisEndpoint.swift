import Dedup

/// Where a Redis server is and how to log in: parsed from a URL, printable without its password.
///
/// Accepted URLs:
/// - `redis://[user:password@]host[:port][/db]`: TCP; port 6379 and database 0 by default.
///   Several hosts, `redis://host1:port1,host2:port2`, are seed nodes of one Redis Cluster: the
///   store asks each in turn for the slot map until one answers (see <doc:RedisCluster>).
///   `redis://:password@host` and `redis://password@host` log in with a password only
///   (`requirepass`), `user:password@` as an ACL user. IPv6 hosts go in brackets: `redis://[::1]:6379`.
/// - `unix://[user:password@]/path/to/redis.sock[?db=N]`: a Unix socket. The user-info part sits
///   before the absolute path (`unix://:secret@/run/redis.sock?db=2`), as in the TCP form.
///
/// User and password may be percent-encoded (`%40` for `@`, `%3A` for `:`, `%2F` for `/`); where
/// the user info ends is decided by ``URLCredentials``, which every printed URL is redacted with.
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
    /// More nodes of the same Redis Cluster, asked for its slot map in turn when ``transport``
    /// does not answer (`redis://host1:port1,host2:port2`); empty for a single server.
    public var additionalSeeds: [Transport] = []
    /// ``transport`` and then ``additionalSeeds``: every node the store may ask first.
    public var seeds: [Transport] { [transport] + additionalSeeds }

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
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` saying what is wrong; the message never
    ///   contains the password.
    public init(url: String) throws(DedupError) {
        func invalid(_ why: String) -> DedupError {
            DedupError(
                .invalidConfiguration,
                "invalid Redis URL \(URLCredentials.redacting(url).debugDescription): \(why)"
            )
        }
        guard let schemeEnd = url.range(of: "://") else {
            throw invalid("expected redis://host:port/db or unix:///path/to/redis.sock")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        var rest = url[schemeEnd.upperBound...]
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

        // User info: where URLCredentials says it is, the same place every printed URL hides.
        var username: String?
        var password: String?
        if let userInfo = URLCredentials.userInfo(in: url) {
            guard let decodedPass = URLCredentials.percentDecoded(url[userInfo.password]) else {
                throw invalid("the password has a malformed %-escape")
            }
            if let user = userInfo.user {
                guard let decodedUser = URLCredentials.percentDecoded(url[user]) else {
                    throw invalid("the user name has a malformed %-escape")
                }
                username = decodedUser.isEmpty ? nil : decodedUser
            }
            // Without a colon the user info is a password (AUTH password), as Redis clients read it.
            password = decodedPass
            if decodedPass.isEmpty { throw invalid("the password is empty") }
            rest = url[userInfo.remainder...]
        }

        // Authority: everything up to the first "/" (the path), "?" or "#".
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var afterAuthority = rest[authorityEnd...]
        if afterAuthority.hasPrefix("#") { throw invalid("fragments (#) are not allowed") }

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
            guard let path = URLCredentials.percentDecoded(afterAuthority) else {
                throw invalid("the socket path has a malformed %-escape")
            }
            self.init(
                transport: .unixSocket(path: path),
                username: username,
                password: password,
                database: queryDatabase ?? 0
            )
            return
        }

        // redis://host[:port][,host[:port]…][/db]: several hosts are seed nodes of one cluster.
        func hostAndPort(_ authority: Substring) throws(DedupError) -> Transport {
            var host: Substring
            var portText: Substring?
            if authority.hasPrefix("[") {
                guard let close = authority.firstIndex(of: "]") else {
                    throw invalid("an IPv6 host lacks its closing ]")
                }
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
                    throw invalid(
                        "the port must be a number from 1 to 65535, not \(String(portText).debugDescription)"
                    )
                }
                port = value
            }
            return .tcp(host: String(host), port: port)
        }
        var seeds: [Transport] = []
        for seed in authority.split(separator: ",", omittingEmptySubsequences: false) {
            seeds.append(try hostAndPort(seed))
        }
        var database = 0
        let path = afterAuthority.drop(while: { $0 == "/" })
        if !path.isEmpty {
            guard let value = Int(path), value >= 0 else {
                throw invalid(
                    "the path must be a database number (/0, /1, ...), not \(String(afterAuthority).debugDescription)"
                )
            }
            database = value
        }
        if let queryDatabase {
            guard path.isEmpty || queryDatabase == database else {
                throw invalid("the database is given twice, differently")
            }
            database = queryDatabase
        }
        self.init(transport: seeds[0], username: username, password: password, database: database)
        self.additionalSeeds = Array(seeds.dropFirst())
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
        case .tcp:
            let hosts = seeds.compactMap { seed -> String? in
                guard case .tcp(let host, let port) = seed else { return nil }
                return (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
            }
            return "redis://\(userInfo)\(hosts.joined(separator: ","))/\(database)"
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
}
