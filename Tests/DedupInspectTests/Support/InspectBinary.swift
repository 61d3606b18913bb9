import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What one run of the built `dedup-inspect` did.
struct InspectRun: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
    /// The child's own peak resident set, in KiB (its VmHWM sampled every 2 ms on Linux).
    var peakRSSKiB: Int
    /// Wall time of the run.
    var duration: Duration

    /// stdout parsed as one JSON document.
    func json() throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8), options: [.fragmentsAllowed])
        guard let dictionary = object as? [String: Any] else {
            throw InspectTestError("stdout is not a JSON object: \(stdout.prefix(500))")
        }
        return dictionary
    }
}

struct InspectTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs the built binary. The test command builds everything first (`swift build --build-tests`),
/// so the binary sits next to the test bundle; `DEDUP_BIN_DIR` points elsewhere (a release build).
enum InspectBinary {
    static let path: String = {
        let environment = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let directory = environment["DEDUP_BIN_DIR"] { candidates.append(directory) }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // On Linux the test runner is .build/debug/<package>PackageTests.xctest; on macOS it is
        // inside a bundle, so walk up a few levels.
        for _ in 0..<4 {
            candidates.append(directory.path)
            directory = directory.deletingLastPathComponent()
        }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().path)
        for candidate in candidates {
            let path = candidate + "/dedup-inspect"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return ""
    }()

    /// Runs `dedup-inspect` with `arguments`; stdout and stderr go to files (no pipe to drain, and
    /// large outputs cost the test nothing), and wait4 gives the child's own peak memory.
    /// `launcher` runs it through another program (``UnprivilegedRun/launcher``), which must exec it.
    static func run(
        _ arguments: [String],
        environment extra: [String: String] = [:],
        stdoutPath: String? = nil,
        launcher: [String] = []
    ) async throws -> InspectRun {
        guard !path.isEmpty else {
            throw InspectTestError(
                "dedup-inspect not found next to the tests: run `swift build --build-tests` first, or set DEDUP_BIN_DIR"
            )
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inspect-run-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outPath = stdoutPath ?? directory.appendingPathComponent("stdout").path
        let errPath = directory.appendingPathComponent("stderr").path
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "DEDUP_STORE")
        for (key, value) in extra { environment[key] = value }

        let binary = launcher.first ?? path
        let fullArguments = launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [path] + arguments
        let finalEnvironment = environment
        let (status, rusage, duration) = try await withCheckedThrowingContinuation { continuation in
            // wait4 blocks: give it a thread of its own, not one of the cooperative pool's.
            let thread = Thread {
                continuation.resume(
                    with: Result { try spawnAndWait(binary, fullArguments, finalEnvironment, outPath, errPath) }
                )
            }
            thread.start()
        }
        let stdout = stdoutPath == nil ? (try String(contentsOfFile: outPath, encoding: .utf8)) : ""
        let stderr = try String(contentsOfFile: errPath, encoding: .utf8)
        return InspectRun(
            status: status,
            stdout: stdout,
            stderr: stderr,
            peakRSSKiB: Int(rusage.ru_maxrss),
            duration: duration
        )
    }

    private static func spawnAndWait(
        _ binary: String,
        _ arguments: [String],
        _ environment: [String: String],
        _ outPath: String,
        _ errPath: String
    ) throws -> (Int32, rusage, Duration) {
        let started = ContinuousClock.now
        let pid = try ChildProcess.spawn(binary, arguments, environment: environment, stdout: outPath, stderr: errPath)
        var status: Int32 = 0
        var usage = rusage()
        // The child's peak memory: wait4's ru_maxrss would count the test process's own memory
        // (posix_spawn shares it until exec, and the high-water mark survives exec), so sample the
        // exec'd program's own high-water mark (VmHWM) while it runs; it only grows.
        var peakKiB = 0
        while true {
            let reaped = wait4(pid, &status, WNOHANG, &usage)
            if reaped == pid { break }
            if reaped < 0 {
                guard errno == EINTR else {
                    throw InspectTestError("wait4 failed: \(String(cString: strerror(errno)))")
                }
                continue
            }
            if let hwm = highWaterMarkKiB(pid) { peakKiB = max(peakKiB, hwm) }
            usleep(2_000)
        }
        let duration = ContinuousClock.now - started
        let signal = status & 0x7F
        if signal != 0 { throw InspectTestError("dedup-inspect \(arguments) died of signal \(signal)") }
        #if os(Linux)
        usage.ru_maxrss = peakKiB
        #endif
        return ((status >> 8) & 0xFF, usage, duration)
    }

    /// `VmHWM` of a running process, in KiB (Linux).
    private static func highWaterMarkKiB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return nil }
        return Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
    }
}

/// Starting child processes with posix_spawn and a clean signal state.
///
/// The test runner's threads block most signals, and a child inherits that mask: a redis-server
/// started with it ignores SIGTERM. So every child gets an empty mask and default handlers.
enum ChildProcess {
    static func spawn(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        stdout: String,
        stderr: String
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            throw InspectTestError("cannot start \(executable): \(String(cString: strerror(spawned)))")
        }
        return pid
    }
}

/// A temporary directory removed when the test ends.
final class TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dedup-inspect-tests-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        path = url.path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
