import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real redis-server on a loopback port of its own, for one test; stopped when released.
///
/// There is no skipping: without redis-server the test fails and says how to install it.
final class RedisServer: @unchecked Sendable {
    let port: Int
    let password: String?
    private let pid: pid_t
    private let directory: TemporaryDirectory

    /// `redis://[:password@]127.0.0.1:port/0`.
    var url: String {
        "redis://" + (password.map { ":\($0)@" } ?? "") + "127.0.0.1:\(port)/0"
    }

    static func executable() throws -> String {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw InspectTestError("redis-server not found: install it with `apt-get install redis-server` (scripts/install-deps does)")
    }

    init(password: String? = nil) throws {
        let executable = try Self.executable()
        directory = try TemporaryDirectory()
        self.password = password
        var lastError = ""
        for _ in 0..<20 {
            let port = Int.random(in: 20_000..<60_000)
            var arguments = [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory.path, "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
            ]
            if let password { arguments += ["--requirepass", password] }
            let log = directory.path + "/redis-\(port).log"
            let pid = try ChildProcess.spawn(executable, arguments, stdout: log, stderr: log + ".err")
            switch Self.waitUntilListening(port: port, pid: pid) {
            case .listening:
                self.port = port
                self.pid = pid
                return
            case .exited: break  // port taken, most likely: try another
            case .timedOut: Self.stop(pid)
            }
            lastError = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        }
        throw InspectTestError("redis-server did not start: \(lastError)")
    }

    /// Polls until the port accepts a connection (the server's readiness has no other signal), or
    /// the process died (port taken).
    private enum Start { case listening, exited, timedOut }

    private static func waitUntilListening(port: Int, pid: pid_t) -> Start {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { return .exited }
            if canConnect(port: port) { return .listening }
            usleep(5_000)
        }
        return .timedOut
    }

    static func canConnect(port: Int) -> Bool {
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

    /// A loopback port nobody listens on (for "unreachable" tests).
    static func closedPort() -> Int {
        while true {
            let port = Int.random(in: 20_000..<60_000)
            if !canConnect(port: port) { return port }
        }
    }

    /// SIGTERM (a clean shutdown; nothing is persisted) and reap.
    private static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    deinit { Self.stop(pid) }
}
