import Dedup
import DedupSQLite
import Foundation
import Testing

/// Listing and resetting a large store keep memory flat: both page through the store. The CI size
/// is small enough for a debug build (`DEDUP_INSPECT_LARGE_N`, default 60,000); the 1,000,000-record
/// figures come from `scripts/inspect-benchmark` on a release build.
@Suite("dedup-inspect on a large store")
struct LargeStoreTests {
    static var largeCount: Int {
        ProcessInfo.processInfo.environment["DEDUP_INSPECT_LARGE_N"].flatMap(Int.init) ?? 60_000
    }

    /// Fills a store with `count` completed records in namespace "bulk" through the store's own
    /// batch calls.
    static func makeStore(count: Int, in directory: TemporaryDirectory, name: String) async throws -> String {
        let path = directory.path + "/\(name).sqlite"
        let store = try SQLiteDedupStore(path: path)
        defer { store.close() }
        let batch = 1000
        for start in stride(from: 0, to: count, by: batch) {
            let requests = try (start..<min(start + batch, count)).map {
                ClaimRequest(
                    id: try RecordID(namespace: "bulk", key: "message-\($0)"),
                    lease: .seconds(60),
                    retention: .seconds(3600)
                )
            }
            let completions: [Completion] = try await store.claim(batch: requests).compactMap {
                if case .acquired(let lease) = $0 { return Completion(lease: lease, retention: .seconds(3600)) }
                return nil
            }
            _ = try await store.complete(batch: completions)
        }
        return path
    }

    @Test("list and reset of many records use about the memory of a few records")
    func boundedMemory() async throws {
        let directory = try TemporaryDirectory()
        let large = Self.largeCount
        let small = 1000
        let smallPath = try await Self.makeStore(count: small, in: directory, name: "small")
        let largePath = try await Self.makeStore(count: large, in: directory, name: "large")

        func list(_ path: String) async throws -> InspectRun {
            let run = try await InspectBinary.run(
                ["list", "--store", "sqlite:\(path)", "--format", "json"],
                stdoutPath: "/dev/null"
            )
            #expect(run.status == 0, "\(run.stderr)")
            return run
        }
        let smallList = try await list(smallPath)
        let largeList = try await list(largePath)

        let countRun = try await InspectBinary.run([
            "list", "--store", "sqlite:\(largePath)", "--format", "json", "--namespace", "bulk", "--key-prefix",
            "message-1",
        ])
        let expectedPrefixCount = (0..<large).filter { String($0).hasPrefix("1") }.count
        #expect(try countRun.json().int("count") == expectedPrefixCount)

        let reset = try await InspectBinary.run([
            "reset", "--store", "sqlite:\(largePath)", "--namespace", "bulk", "--all-time", "--yes", "--format", "json",
        ])
        #expect(reset.status == 0, "\(reset.stderr)")
        #expect(try reset.json().int("deleted") == large)
        let smallReset = try await InspectBinary.run([
            "reset", "--store", "sqlite:\(smallPath)", "--namespace", "bulk", "--all-time", "--yes",
        ])
        #expect(smallReset.status == 0)

        // Holding every record would cost hundreds of bytes each: tens of MiB here. Paging keeps the
        // difference to allocator noise.
        let allowanceKiB = 12 * 1024
        #expect(
            largeList.peakRSSKiB - smallList.peakRSSKiB < allowanceKiB,
            "list: \(small) records peak \(smallList.peakRSSKiB) KiB, \(large) records \(largeList.peakRSSKiB) KiB"
        )
        #expect(
            reset.peakRSSKiB - smallReset.peakRSSKiB < allowanceKiB,
            "reset: \(small) records peak \(smallReset.peakRSSKiB) KiB, \(large) records \(reset.peakRSSKiB) KiB"
        )
        print(
            "list of \(large) records: \(largeList.duration), peak RSS \(largeList.peakRSSKiB) KiB (\(small): \(smallList.peakRSSKiB) KiB); reset: \(reset.duration), peak \(reset.peakRSSKiB) KiB"
        )
    }
}
