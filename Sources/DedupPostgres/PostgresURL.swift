import Dedup
import Foundation
import PostgresNIO

/// A `postgres://user:password@host:port/database?sslmode=…&schema=…` URL, read into a
/// postgres-nio client configuration and the store's schema.
///
/// `postgresql://` is accepted too. The password is percent-decoded. `sslmode` is `disable`
/// (default), `prefer` or `require` (TLS with certificate verification, as postgres-nio offers it);
/// `schema` is the PostgreSQL schema of the dedup tables (default `public`). Host defaults to
/// `localhost`, port to 5432, database to the user's name.
public struct PostgresURL: Sendable {
    /// TLS as the URL's `sslmode` asks for it.
    public enum TLSMode: String, Sendable, Hashable {
        /// No TLS (`sslmode=disable`, the default).
        case disable
        /// TLS when the server offers it (`sslmode=prefer`).
        case prefer
        /// TLS or no connection, the server's certificate verified (`sslmode=require`).
        case require
    }

    /// The server's host name or address.
    public var host: String
    /// The server's TCP port.
    public var port: Int
    /// The user to log in as.
    public var username: String
    /// The password, percent-decoded; `nil` when the URL has none.
    public var password: String?
    /// The database.
    public var database: String
    /// TLS, from `sslmode`.
    public var tls: TLSMode
    /// The `schema` query item, if the URL has one.
    public var schema: String?

    /// The client configuration the URL describes.
    public var clientConfiguration: PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch self.tls {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(.makeClientConfiguration())
        case .require: tls = .require(.makeClientConfiguration())
        }
        return PostgresClient.Configuration(
            host: host,
            port: port,
            username: username,
            password: password,
            database: database,
            tls: tls
        )
    }

    /// The configuration of a single connection to the same server, as the client's.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch self.tls {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        return PostgresConnection.Configuration(
            host: host,
            port: port,
            username: username,
            password: password,
            database: database,
            tls: tls
        )
    }

    /// Parses `text`.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` naming what is wrong (the password
    ///   is never part of the message).
    public init(_ text: String) throws(DedupError) {
        guard let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql"
        else {
            throw DedupError(
                .invalidConfiguration,
                "the store URL is not a PostgreSQL URL: use postgres://user:password@host:port/database"
            )
        }
        guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw DedupError(.invalidConfiguration, "the PostgreSQL URL names no user")
        }
        let password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        let host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        let port = components.port ?? 5432
        var database = String(components.path.drop { $0 == "/" })
        if database.isEmpty { database = user }
        var tls = TLSMode.disable
        var schema: String?
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                switch item.value ?? "" {
                case "disable": tls = .disable
                case "prefer": tls = .prefer
                case "require", "verify-full": tls = .require
                default:
                    throw DedupError(
                        .invalidConfiguration,
                        "sslmode \((item.value ?? "").debugDescription) of the PostgreSQL URL: use disable, prefer or require"
                    )
                }
            case "schema":
                schema = item.value
            default:
                throw DedupError(
                    .invalidConfiguration,
                    "unknown query item \(item.name.debugDescription) in the PostgreSQL URL: use sslmode or schema"
                )
            }
        }
        self.host = host
        self.port = port
        self.username = user
        self.password = password
        self.database = database
        self.tls = tls
        self.schema = schema
    }
}
