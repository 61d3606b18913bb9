import Foundation
import Synchronization

/// A real PostgreSQL server for tests: a fresh cluster (`initdb`) in a temporary folder, started on
/// a free loopback port with password logins (`scram-sha-256`) for ``user``, stopped by ``stop()``.
///
/// ```swift
/// let server = try await PostgresServer.shared()   // one per test process
/// let store = try await PostgresDedupStore(url: server.url, configuration: .init(schema: "t1"))
/// ```
///
/// The server refuses to run as root, so when the tests run as root it runs as the `postgres`
/// system user that Debian's `postgresql` package creates (through `runuser`), in a folder that user
/// owns. It runs under a small supervising shell whose standard input is a pipe from the test
/// process: when the pipe closes — ``stop()``, or the test process ending in any way, a crash or
/// `SIGKILL` included — the shell stops the server and removes its folder. A missing PostgreSQL
/// fails with how to install it: PostgreSQL tests never skip.
public final class PostgresServer: Sendable {
    /// The superuser the tests log in as.
    public let user = "dedup"
    /// Its password.
    public let password = "dedup-secret"
    /// The TCP port on 127.0.0.1.
    public let port: Int
    /// The cluster's folder (data, log, Unix socket).
    public let directory: URL
    private let binDirectory: String
    private let supervisor: Mutex<(process: Process, input: Pipe)?>

    /// `postgres://dedup:dedup-secret@127.0.0.1:PORT/postgres`.
    public var url: String { url(password: password) }

    /// The server's URL with another password (for refused logins) and database.
    public func url(password: String, database: String = "postgres") -> String {
        "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)"
    }

    private init(port: Int, directory: URL, binDirectory: String) {
        self.port = port
        self.directory = directory
        self.binDirectory = binDirectory
        self.supervisor = Mutex(nil)
    }

    private static let sharedServer = SharedServer()

    /// The server of this test process, started on first use and stopped when the process ends.
    /// Tests share it by working in schemas (or databases) of their own.
    public static func shared() async throws -> PostgresServer {
        try await sharedServer.server()
    }

    /// Starts a server of its own (for tests that restart or stop it) and waits until it accepts
    /// connections.
    public static func start() async throws -> PostgresServer {
        guard let binDirectory = Self.binDirectory() else {
            throw RedisServer.Failure(
                description:
                    "PostgreSQL not found (no /usr/lib/postgresql/*/bin/postgres): install it with `apt-get install postgresql` (scripts/install-deps does)"
            )
        }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let directory = URL(fileURLWithPath: NSTemporaryDirectory())
                .appendingPathComponent("dedup-postgres-\(UUID().uuidString.prefix(8))")
            let server = PostgresServer(
                port: try RedisServer.freePort(),
                directory: directory,
                binDirectory: binDirectory
            )
            do {
                try await server.initialize()
                try await server.launch()
                return server
            } catch {
                lastError = error
                await server.stop()
            }
        }
        throw lastError ?? RedisServer.Failure(description: "PostgreSQL did not start")
    }

    /// Stops the server (fast shutdown) and removes its folder.
    public func stop() async {
        await finishSupervisor(with: "stop")
        try? FileManager.default.removeItem(at: directory)
    }

    /// Crashes the server (immediate shutdown: every connection is cut, nothing is saved but the
    /// committed log), keeping its folder for ``restart()``.
    public func crash() async {
        await finishSupervisor(with: "crash")
    }

    /// Starts the server again on the same folder and port after ``crash()``.
    public func restart() async throws {
        try await launch()
    }

    /// Runs `sql` as the superuser over the Unix socket (`psql`); returns what it printed.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        let result = try await asServerUser(
            "\(binDirectory)/psql",
            [
                "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", directory.path, "-p", String(port),
                "-U", user, "-d", database, "-c", sql,
            ]
        )
        guard result.status == 0 else {
            throw RedisServer.Failure(
                description: "psql \(sql.debugDescription) failed (\(result.status)): \(result.errors)"
            )
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: Starting

    private func initialize() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let passwordFile = directory.appendingPathComponent("password")
        try Data(password.utf8).write(to: passwordFile)
        if let owner = Self.serverUser {
            // The server's user must own its folder; root (the tests' user here) can give it away.
            guard chown(directory.path, owner.uid, owner.gid) == 0, chown(passwordFile.path, owner.uid, owner.gid) == 0
            else {
                throw RedisServer.Failure(
                    description: "cannot hand \(directory.path) to the postgres user: errno \(errno)"
                )
            }
        }
        let result = try await asServerUser(
            "\(binDirectory)/initdb",
            [
                "-D", dataDirectory, "-U", user, "--pwfile", passwordFile.path, "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync", "-E", "UTF8", "--locale=C",
            ]
        )
        guard result.status == 0 else {
            throw RedisServer.Failure(description: "initdb failed (\(result.status)): \(result.errors.suffix(2000))")
        }
    }

    private var dataDirectory: String { directory.appendingPathComponent("data").path }
    private var logFile: String { directory.appendingPathComponent("server.log").path }

    /// The supervisor (Perl, which Debian's PostgreSQL tools need anyway): starts the server,
    /// exits when the server ends by itself, and when its input ends stops the server — fast and
    /// removing its folder, or (input `crash`) by immediate shutdown, keeping it. It clears the
    /// signal mask first: the test runner's children inherit SIGCHLD blocked, which would keep a
    /// shell waiting for the server forever.
    private static let supervisorScript = #"""
        use strict; use POSIX ":sys_wait_h"; use IO::Select; use File::Basename;
        POSIX::sigprocmask(POSIX::SIG_SETMASK, POSIX::SigSet->new);
        my ($postgres, $data, $log, @arguments) = @ARGV;
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            open(STDIN, "<", "/dev/null"); open(STDOUT, ">>", $log); open(STDERR, ">&", \*STDOUT);
            exec($postgres, "-D", $data, @arguments) or POSIX::_exit(127);
        }
        my $input = IO::Select->new(\*STDIN);
        my $how;
        while (1) {
            exit 1 if waitpid($pid, WNOHANG) == $pid;
            if ($input->can_read(0.05)) { $how = <STDIN>; last; }
        }
        $how = "stop" unless defined $how; chomp $how;
        kill($how eq "crash" ? "QUIT" : "INT", $pid);
        waitpid($pid, 0);
        system("rm", "-rf", File::Basename::dirname($data)) unless $how eq "crash";
        """#

    private func launch() async throws {
        let arguments = [
            "-c", "listen_addresses=127.0.0.1", "-p", String(port), "-k", directory.path,
            // Test data: no waiting for the disk (the machine does not crash under a test), but every
            // commit reaches the log before it returns, so a crashed server (``crash()``) keeps it.
            "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=32MB",
        ]
        let process = Process()
        let input = Pipe()
        let supervisorArguments =
            ["-e", Self.supervisorScript, "\(binDirectory)/postgres", dataDirectory, logFile] + arguments
        if Self.serverUser != nil {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", "postgres", "--", "/usr/bin/perl"] + supervisorArguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
            process.arguments = supervisorArguments
        }
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        supervisor.withLock { $0 = (process, input) }
        // Poll for readiness: the server writes "ready" into the status line of its own
        // postmaster.pid (in our folder, so a server of another test on the same port cannot fool it).
        let deadline = ContinuousClock.now + .seconds(30)
        let pidFile = URL(fileURLWithPath: dataDirectory).appendingPathComponent("postmaster.pid")
        while ContinuousClock.now < deadline && process.isRunning {
            if let text = try? String(contentsOf: pidFile, encoding: .utf8) {
                let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                if lines.count > 7, lines[7].trimmingCharacters(in: .whitespaces) == "ready" { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        throw RedisServer.Failure(description: "PostgreSQL did not become ready on port \(port): \(log.suffix(2000))")
    }

    /// Tells the supervisor how to stop the server and waits for it to exit.
    private func finishSupervisor(with how: String) async {
        guard
            let (process, input) = supervisor.withLock({ value in
                defer { value = nil }
                return value
            })
        else { return }
        try? input.fileHandleForWriting.write(contentsOf: Data((how + "\n").utf8))
        try? input.fileHandleForWriting.close()
        while process.isRunning {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: Helpers

    /// The `postgres` system user when the tests run as root (the server refuses root); else `nil`.
    private static var serverUser: (uid: uid_t, gid: gid_t)? {
        guard getuid() == 0, let entry = getpwnam("postgres") else { return nil }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    private func asServerUser(_ executable: String, _ arguments: [String]) async throws -> ProcessResult {
        if Self.serverUser != nil {
            return try await runProcess("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        }
        return try await runProcess(executable, arguments)
    }

    /// The newest installed PostgreSQL's `bin` folder (Debian: /usr/lib/postgresql/N/bin).
    private static func binDirectory() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions {
            let bin = "\(root)/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: "\(bin)/postgres") { return bin }
        }
        return nil
    }
}

/// Starts the process's shared server once, however many tests ask at once.
private actor SharedServer {
    private var starting: Task<PostgresServer, any Error>?

    func server() async throws -> PostgresServer {
        if let starting { return try await starting.value }
        let task = Task { try await PostgresServer.start() }
        starting = task
        return try await task.value
    }
}
