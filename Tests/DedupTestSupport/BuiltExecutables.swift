import Foundation

/// The package's executables as the test command built them (`swift build --build-tests` puts them
/// beside the test bundle); `DEDUP_BIN_DIR` overrides the folder.
public enum BuiltExecutables {
    /// The folder holding `dedup-inspect`, `dedup-worker` and the test bundle.
    public static var directory: URL {
        if let override = ProcessInfo.processInfo.environment["DEDUP_BIN_DIR"] {
            return URL(fileURLWithPath: override)
        }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // The runner may be the bundle itself or a file inside it (…/swift-dedupPackageTests.xctest).
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("dedup-worker").path) {
                return url
            }
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    /// The path of one executable; fails with how to build it when it is missing.
    public static func path(_ name: String) throws -> String {
        let path = directory.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw RedisServer.Failure(
                description: "\(path) is missing: build it first with `swift build --build-tests` (scripts/test does)"
            )
        }
        return path
    }
}

/// A finished child process: its exit status and what it printed.
public struct ProcessResult: Sendable {
    /// The exit status (or the signal number, negated).
    public var status: Int32
    /// Standard output.
    public var output: String
    /// Standard error.
    public var errors: String
}

/// Runs a child process to the end without blocking a cooperative thread while it runs.
public func runProcess(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String]? = nil
) async throws
    -> ProcessResult
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    // Output goes to files, not pipes: reading pipes would need threads of its own (blocking reads
    // on the cooperative pool starve it when several children run at once).
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dedup-process-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let outputURL = folder.appendingPathComponent("stdout")
    let errorsURL = folder.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errorsURL.path, contents: nil)
    let output = try FileHandle(forWritingTo: outputURL)
    let errors = try FileHandle(forWritingTo: errorsURL)
    defer {
        try? output.close()
        try? errors.close()
    }
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        process.terminationHandler = { _ in continuation.resume() }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
        }
    }
    let status = process.terminationReason == .uncaughtSignal ? -process.terminationStatus : process.terminationStatus
    return ProcessResult(
        status: status,
        output: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
        errors: (try? String(contentsOf: errorsURL, encoding: .utf8)) ?? ""
    )
}
