import DedupTestSupport
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs `body` with a real redis-server of its own (the shared test support's), started with
/// `arguments` and stopped afterwards whatever happens. Without redis-server the test fails saying
/// how to install it.
func withRedisServer<R>(
    password: String? = nil,
    arguments: [String] = [],
    _ body: (RedisServer) async throws -> R
) async throws -> R {
    let server = try await RedisServer.start(arguments: (password.map { ["--requirepass", $0] } ?? []) + arguments)
    do {
        let result = try await body(server)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

extension RedisServer {
    /// The server's URL with a password and database: `redis://[:password@]127.0.0.1:PORT/0`.
    func url(password: String?) -> String {
        "redis://" + (password.map { ":\($0)@" } ?? "") + "127.0.0.1:\(port!)/0"
    }
}

/// A loopback port nobody listens on (for "unreachable" tests).
func closedLoopbackPort() -> Int {
    while true {
        let port = Int.random(in: 20_000..<60_000)
        if !canConnect(port: port) { return port }
    }
}

private func canConnect(port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
