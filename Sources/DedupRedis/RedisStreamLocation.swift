import Dedup

/// Where a Redis stream is: a server (``RedisEndpoint``) and the stream's key, parsed from
/// `redis://[user:password@]host[:port]/KEY[?db=N]` or `unix://[user:password@]/path.sock?key=KEY[&db=N]`.
///
/// The key is the percent-decoded path (`/orders%2Feu` is the key `orders/eu`), so unlike a store
/// URL the path names no database: that goes in `?db=N`. Secrets are found and hidden by
/// ``URLCredentials``, as for every store URL.
package struct RedisStreamLocation: Hashable, Sendable, CustomStringConvertible {
    /// The server.
    package var endpoint: RedisEndpoint
    /// The stream's key.
    package var key: String

    /// Parses a stream location.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` saying what is wrong; the message never
    ///   contains the password.
    package init(url: String) throws(DedupError) {
        func invalid(_ why: String) -> DedupError {
            DedupError(
                .invalidConfiguration,
                "invalid stream location \(URLCredentials.redacting(url).debugDescription): \(why)"
            )
        }
        guard let schemeEnd = url.range(of: "://") else {
            throw invalid("expected redis://host:port/KEY or unix:///path/to/redis.sock?key=KEY")
        }
        let queryStart = url.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? url.endIndex
        var query = url[queryStart...].dropFirst().split(separator: "&", omittingEmptySubsequences: false).map(
            String.init
        )
        var server: String
        var encodedKey: Substring?
        if url[..<schemeEnd.lowerBound].lowercased() == "unix" {
            // The path is the socket's: the key goes in the query.
            encodedKey = query.first { $0.hasPrefix("key=") }?.dropFirst(4)
            query.removeAll { $0.hasPrefix("key=") }
            server = String(url[..<queryStart])
        } else {
            let hostStart = URLCredentials.userInfo(in: url)?.remainder ?? schemeEnd.upperBound
            let pathStart = url[hostStart..<queryStart].firstIndex(of: "/") ?? queryStart
            encodedKey = url[pathStart..<queryStart].dropFirst()
            server = String(url[..<pathStart])
        }
        if !query.isEmpty && !url[queryStart...].hasPrefix("#") { server += "?" + query.joined(separator: "&") }
        guard let encodedKey, !encodedKey.isEmpty else {
            throw invalid(
                "the stream's key is missing: redis://host:port/KEY (database in ?db=N), unix:///path/to/redis.sock?key=KEY"
            )
        }
        guard let key = URLCredentials.percentDecoded(encodedKey) else {
            throw invalid("the key has a malformed %-escape")
        }
        self.endpoint = try RedisEndpoint(url: server)
        self.key = key
    }

    /// The location with the password replaced by `***`, the key percent-encoded where it must be.
    package var description: String {
        let encodedKey = key.addingPercentEscapes(keeping: {
            $0.isLetter || $0.isNumber || "-._~:@!$&'()*+,;=".contains($0)
        })
        switch endpoint.transport {
        case .tcp:
            let server = endpoint.redactedDescription
            let withoutDatabase = server[..<(server.lastIndex(of: "/") ?? server.endIndex)]
            return "\(withoutDatabase)/\(encodedKey)" + (endpoint.database == 0 ? "" : "?db=\(endpoint.database)")
        case .unixSocket:
            let server = endpoint.redactedDescription
            return server + (server.contains("?") ? "&" : "?") + "key=\(encodedKey)"
        }
    }
}

extension String {
    /// The string with every character `keeping` rejects written as `%XX` escapes of its UTF-8.
    fileprivate func addingPercentEscapes(keeping: (Character) -> Bool) -> String {
        var result = ""
        for character in self {
            if keeping(character) && character.isASCII {
                result.append(character)
            } else {
                for byte in String(character).utf8 {
                    result += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
                }
            }
        }
        return result
    }

    private func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
