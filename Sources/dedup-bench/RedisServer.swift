// A redis-server of the benchmark's own on loopback: a free port, no persistence, a temp directory;
// stopped at the end. Also PING and FLUSHALL between paths.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

final class RedisServer {
    let port: Int
    let host = "127.0.0.1"
    private let process: Process?

    var url: String { "redis://\(host):\(port)/0" }

    /// The server's process, when this benchmark started it.
    var processID: Int32? { process?.processIdentifier }

    /// Starts redis-server and waits until it answers PING.
    init(executable: String, directory: String, extraArguments: [String] = []) throws {
        guard let path = findOnPath(executable) else {
            throw BenchError(
                "redis-server not found (looked for \(executable.debugDescription) on PATH): install it with `apt-get install redis-server`, or run with --only sqlite"
            )
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var lastError = ""
        // A free port can be taken between finding it and binding it; try a few.
        for _ in 0..<5 {
            let port = try Self.freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments =
                [
                    "--port", "\(port)", "--bind", host, "--save", "", "--appendonly", "no", "--dir", directory,
                    "--daemonize", "no", "--logfile", "\(directory)/redis.log", "--protected-mode", "yes",
                ] + extraArguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date() + 10
            while Date() < deadline, process.isRunning {
                if (try? Self.command(host: host, port: port, ["PING"])) == "PONG" {
                    self.port = port
                    self.process = process
                    return
                }
                usleep(20_000)
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            while process.isRunning { usleep(10_000) }
            lastError = (try? String(contentsOfFile: "\(directory)/redis.log", encoding: .utf8)) ?? ""
        }
        throw BenchError("redis-server did not start on loopback; its log:\n\(lastError)")
    }

    /// Uses a server someone else started (and will stop) on 127.0.0.1.
    init(existingPort port: Int) throws {
        guard (try? Self.command(host: host, port: port, ["PING"])) == "PONG" else {
            throw BenchError("no redis-server answers PING on 127.0.0.1:\(port)")
        }
        self.port = port
        self.process = nil
    }

    /// Deletes every key, so each path starts from an empty server like the ceiling does.
    func flushAll() throws {
        let answer = try Self.command(host: host, port: port, ["FLUSHALL"])
        guard answer == "OK" else { throw BenchError("FLUSHALL answered \(answer)") }
    }

    /// Stops the server and waits for it: `SHUTDOWN NOSAVE` (a child spawned from a Swift
    /// concurrency thread inherits its blocked signal mask, so SIGTERM may never arrive), then
    /// SIGKILL if it is still there after a few seconds.
    func stop() {
        guard let process, process.isRunning else { return }
        _ = try? Self.command(host: host, port: port, ["SHUTDOWN", "NOSAVE"])
        if !waitForExit(seconds: 5) {
            kill(process.processIdentifier, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
    }

    /// Polls rather than `waitUntilExit`, which spins a run loop on a core the benchmark needs.
    private func waitForExit(seconds: Double) -> Bool {
        guard let process else { return true }
        let deadline = Date() + seconds
        while process.isRunning, Date() < deadline { usleep(10_000) }
        return !process.isRunning
    }

    deinit { stop() }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw BenchError("bind: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Sends one command over a connection of its own and returns the reply as text (a status
    /// reply without its `+`): enough for PING, FLUSHALL and SHUTDOWN.
    static func command(host: String, port: Int, _ arguments: [String]) throws -> String {
        try ControlConnection(host: host, port: port).call(arguments).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}
