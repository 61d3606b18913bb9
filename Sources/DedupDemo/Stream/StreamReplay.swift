import Dedup
import DedupRedisStreams
import DedupStoreLocator
import Foundation

/// A coordinated replay of the broker range [`from`, `until`), as an operator runs it:
/// `dedup-inspect replay --yes`, the executable beside this one. It deletes the completed dedup
/// records whose broker time lies in the range (so the entries of the range apply again), then
/// moves the group to just before `from` (so the entry at `from` itself comes again). Entries after
/// `until` come again too and are skipped as duplicates.
enum StreamReplay {
    /// What the replay did.
    struct Result: Sendable {
        /// Records reset (deleted).
        var resetRecords: Int
        /// The ID the group was moved to.
        var groupPosition: StreamEntryID
    }

    static func run(
        store: StoreLocation,
        namespace: String,
        broker: StreamBrokerLocation,
        group: String,
        from: Date,
        until: Date
    ) async throws -> Result {
        let arguments = [
            "replay", "--namespace", namespace, "--stream", "\(broker.url)/\(broker.stream)", "--group", group,
            "--from", "\(from.millisecondsSince1970)ms", "--until", "\(until.millisecondsSince1970)ms",
            "--yes", "--all-matching", "--sample", "0", "--format", "json",
        ]
        // The store's password goes through the environment, not the arguments `ps` shows.
        let (status, output, errors) = try await runInspect(arguments, environment: ["DEDUP_STORE": store.spelling])
        guard status == 0,
            let document = try? JSONSerialization.jsonObject(with: output) as? [String: Any],
            let deleted = document["deleted"] as? Int,
            let position = (document["new_position"] as? String).flatMap(StreamEntryID.init)
        else {
            throw DedupError(
                .storeError,
                "dedup-inspect replay failed (exit \(status)): "
                    + store.redactingSecrets(in: String(decoding: (output + errors).prefix(1000), as: UTF8.self))
            )
        }
        return Result(resetRecords: deleted, groupPosition: position)
    }

    /// Runs `dedup-inspect` from this executable's folder; returns its exit status, standard output
    /// and standard error. The wait is on the process's termination handler, not a cooperative thread.
    private static func runInspect(
        _ arguments: [String],
        environment: [String: String]
    ) async throws -> (Int32, Data, Data) {
        guard let demo = Bundle.main.executableURL else {
            throw DedupError(
                .invalidConfiguration,
                "cannot find the dedup-demo executable, beside which dedup-inspect is"
            )
        }
        let inspect = demo.deletingLastPathComponent().appendingPathComponent("dedup-inspect")
        guard FileManager.default.isExecutableFile(atPath: inspect.path) else {
            throw DedupError(
                .invalidConfiguration,
                "dedup-inspect is not beside dedup-demo at \(inspect.path): build both (swift build)"
            )
        }
        let process = Process()
        process.executableURL = inspect
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        // Its output is a short JSON document (no samples), well within a pipe's buffer.
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { process in
                continuation.resume(
                    returning: (
                        process.terminationStatus, output.fileHandleForReading.readDataToEndOfFile(),
                        errors.fileHandleForReading.readDataToEndOfFile()
                    )
                )
            }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
    }
}
