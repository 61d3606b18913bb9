import Foundation
import Synchronization

/// A real `redis-server` for one test: started on a free loopback port (or a Unix socket in a
/// temporary directory) with persistence off and a directory of its own, stopped by ``stop()``.
///
/// ```swift
/// let server = try await RedisServer.start()
/// defer { server.stopNow() }   // or `await server.stop()` at the end
/// let store = try RedisDedupStore(url: server.url)
/// ```
///
/// If `redis-server` is not installed the start fails with a message saying how to install it:
/// Redis tests never skip.
public final class RedisServer: Sendable {
    /// Errors starting or talking to the server.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String

        /// A failure saying what went wrong.
        public init(description: String) {
            self.description = description
        }
    }

    /// How the server listens.
    public enum Listener: Sendable {
        case loopback
        case unixSocket
    }

    /// The TCP port, when listening on loopback.
    public let port: Int?
    /// The socket path, when listening on a Unix socket.
    public let socketPath: String?
    /// The server's directory (log, socket); removed by ``stop()``.
    public let directory: URL
    /// Extra `redis-server` arguments, kept for ``restart()``.
    public let extraArguments: [String]
    private let process: Mutex<Process?>

    /// `redis://127.0.0.1:PORT` or `unix:///…/redis.sock`, without credentials.
    public var url: String {
        if let port { return "redis://127.0.0.1:\(port)" }
        return "unix://\(socketPath!)"
    }

    private init(port: Int?, socketPath: String?, directory: URL, extraArguments: [String]) {
        self.port = port
        self.socketPath = socketPath
        self.directory = directory
        self.extraArguments = extraArguments
        self.process = Mutex(nil)
    }

    /// Starts a server and waits until it answers `PING`.
    ///
    /// - Parameters:
    ///   - listener: Loopback TCP on a free port (default) or a Unix socket.
    ///   - arguments: Extra configuration, as `redis-server` arguments (`["--requirepass", "s3cret"]`).
    public static func start(listener: Listener = .loopback, arguments: [String] = []) async throws -> RedisServer {
        guard executable("redis-server") != nil else {
            throw Failure(description: "redis-server not found: install it with `apt-get install redis-server`")
        }
        guard executable("redis-cli") != nil else {
            throw Failure(description: "redis-cli not found: install it with `apt-get install redis-tools`")
        }
        var lastError: Error?
        for _ in 0..<5 {
            let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent(
                "dedup-redis-\(UUID().uuidString.prefix(8))"
            )
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let server: RedisServer
            switch listener {
            case .loopback:
                server = RedisServer(
                    port: try freePort(),
                    socketPath: nil,
                    directory: directory,
                    extraArguments: arguments
                )
            case .unixSocket:
                server = RedisServer(
                    port: nil,
                    socketPath: directory.appendingPathComponent("redis.sock").path,
                    directory: directory,
                    extraArguments: arguments
                )
            }
            do {
                try await server.launch()
                return server
            } catch {
                lastError = error
                await server.stop()
            }
        }
        throw lastError ?? Failure(description: "redis-server did not start")
    }

    /// Starts the server again with the same port or socket and arguments (after ``kill()``).
    public func restart() async throws {
        try await launch()
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to clients) and waits for it to exit.
    public func kill() async {
        await terminate(signal: SIGKILL)
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    public func suspend() {
        if let pid = process.withLock({ $0?.processIdentifier }) { Foundation.kill(pid, SIGSTOP) }
    }

    /// Thaws a server frozen by ``suspend()`` (SIGCONT).
    public func resume() {
        if let pid = process.withLock({ $0?.processIdentifier }) { Foundation.kill(pid, SIGCONT) }
    }

    /// Whether the server process runs (not killed or stopped).
    public var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    /// Stops the server and removes its directory.
    public func stop() async {
        await terminate(signal: SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `redis-cli` against the server with `arguments` and returns its output (trimmed).
    @discardableResult
    public func cli(_ arguments: String...) async throws -> String {
        try await cli(arguments: arguments)
    }

    /// Runs `redis-cli` against the server with `arguments`, logging in with `password` if given.
    public func cli(arguments: [String], password: String? = nil, user: String? = nil) async throws -> String {
        var full: [String] = []
        if let port { full += ["-h", "127.0.0.1", "-p", String(port)] } else { full += ["-s", socketPath!] }
        if let user { full += ["--user", user] }
        if let password { full += ["--no-auth-warning", "-a", password] }
        let (status, output) = try await Self.run(Self.executable("redis-cli")!, full + arguments)
        guard status == 0 else { throw Failure(description: "redis-cli \(arguments) failed (\(status)): \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func launch() async throws {
        var arguments = [
            "--save", "", "--appendonly", "no", "--dir", directory.path, "--daemonize", "no",
            "--logfile", directory.appendingPathComponent("redis.log").path,
        ]
        if let port {
            arguments += ["--port", String(port), "--bind", "127.0.0.1"]
        } else {
            arguments += ["--port", "0", "--unixsocket", socketPath!, "--unixsocketperm", "700"]
        }
        arguments += extraArguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable("redis-server")!)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process.withLock { $0 = process }
        // Poll for readiness: redis-server offers no readiness signal when not daemonized.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if !process.isRunning { break }
            if let answer = try? await cli(arguments: ["PING"]), answer == "PONG" || answer.contains("NOAUTH") {
                // Another test process may have been handed the same free port and started its
                // server there first: then ours exits ("Address already in use") while theirs
                // answers. Only our own server will do.
                if try await answeringServerIsOurs(process) { return }
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
        throw Failure(description: "redis-server did not answer PING at \(url): \(log.suffix(2000))")
    }

    /// Whether the server answering on our port is the process we started: by its `process_id`
    /// when `INFO` answers, else by ours still running a moment after the answer.
    private func answeringServerIsOurs(_ process: Process) async throws -> Bool {
        var password: String?
        if let index = extraArguments.firstIndex(of: "--requirepass"), index + 1 < extraArguments.count {
            password = extraArguments[index + 1]
        }
        if let info = try? await cli(arguments: ["INFO", "server"], password: password),
            let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("process_id:") }),
            let pid = Int32(line.dropFirst("process_id:".count).trimmingCharacters(in: .whitespaces))
        {
            return pid == process.processIdentifier
        }
        try await Task.sleep(for: .milliseconds(200))
        return process.isRunning
    }

    private func terminate(signal: Int32) async {
        guard
            let process = self.process.withLock({ value -> Process? in
                defer { value = nil }
                return value
            })
        else { return }
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGCONT)
            Foundation.kill(process.processIdentifier, signal)
        }
        while process.isRunning {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    private static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A port the kernel just handed out for a loopback socket, now free again.
    public static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket() failed") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw Failure(description: "bind() failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { throw Failure(description: "getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func run(_ executable: String, _ arguments: [String]) async throws -> (Int32, String) {
        // Output goes to a file, read once the process has exited: a pipe would fill up under a
        // command that writes much (`--cluster reshard` prints a line per key moved) unless a
        // thread kept reading it, and blocked threads starve the tests that judge time.
        let outputPath = NSTemporaryDirectory() + "dedup-redis-cli-\(UUID().uuidString).txt"
        guard FileManager.default.createFile(atPath: outputPath, contents: nil),
            let output = FileHandle(forWritingAtPath: outputPath)
        else {
            throw Failure(description: "cannot create \(outputPath)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = output
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { process in
                try? output.close()
                let data = FileManager.default.contents(atPath: outputPath) ?? Data()
                try? FileManager.default.removeItem(atPath: outputPath)
                continuation.resume(returning: (process.terminationStatus, String(decoding: data, as: UTF8.self)))
            }
            do {
                try process.run()
            } catch {
                try? output.close()
                try? FileManager.default.removeItem(atPath: outputPath)
                continuation.resume(throwing: error)
            }
        }
    }
}
