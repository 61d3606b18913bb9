import Dedup
import DedupSQLite
import DedupTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `stats`, `list`, `show` and `check` only read: they open SQLite read-only, work where nothing
/// may be written, and leave the file and its directory as they found them.
@Suite("dedup-inspect reads SQLite without writing")
struct ReadOnlyInspectTests {
    /// The reading commands, each with what its success looks like.
    static func readingCommands(_ location: String) -> [(arguments: [String], expectation: (InspectRun) throws -> Void)]
    {
        [
            (
                ["stats", "--store", location, "--format", "json"],
                { run throws in #expect(try run.json().int("total") == 4) }
            ),
            (
                ["list", "--store", location, "--format", "json"],
                { run throws in #expect(try run.json().int("count") == 4) }
            ),
            (
                ["show", "--store", location, "--namespace", "orders", "o-1", "--format", "json"],
                { run throws in
                    #expect(try run.json().object("record")?.string("state") == "completed")
                }
            ),
            (
                ["check", "--store", location, "--format", "json"],
                { run throws in
                    let document = try run.json()
                    #expect(document.bool("ok") == true)
                    #expect(document.int("round_trips") == 5, "check times round trips on a current schema")
                }
            ),
        ]
    }

    /// A closed store with three completed records and one in flight: its write-ahead log is folded
    /// in and removed, as a consumer leaves it when it stops.
    static func restingStore(in directory: TemporaryDirectory) async throws -> String {
        let path = directory.path + "/dedup.sqlite"
        let store = try SQLiteDedupStore(path: path)
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: ["o-1", "o-2", "o-3"])
        try await filler.claim("orders", key: "o-busy")
        store.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["dedup.sqlite"])
        return path
    }

    /// Runs every reading command through `launcher` and checks it succeeded and that the
    /// directory's listing and the database file's bytes and modification time stayed as they were.
    static func expectReadsChangeNothing(
        path: String,
        directory: String,
        launcher: [String] = [],
        storeOpenHere: Bool = false
    ) async throws {
        let before = try FileState(path, in: directory, readingBytes: !storeOpenHere)
        for (arguments, expectation) in readingCommands("sqlite:\(path)") {
            let watch = try DirectoryWatch(directory)
            let run = try await InspectBinary.run(arguments, launcher: launcher)
            #expect(run.status == 0, "\(arguments[0]): \(run.stderr)")
            if run.status == 0 { try expectation(run) }
            #expect(watch.createdNames() == [], "\(arguments[0]) created files beside the store, if only for a while")
            let after = try FileState(path, in: directory, readingBytes: !storeOpenHere)
            #expect(after.listing == before.listing, "\(arguments[0]) left files beside the store")
            #expect(after.bytes == before.bytes && after.size == before.size, "\(arguments[0]) changed the file")
            #expect(after.modifiedNanoseconds == before.modifiedNanoseconds, "\(arguments[0]) touched the file")
        }
    }

    @Test("stats, list, show and check read a 0444 file in a 0555 directory and create no -wal or -shm beside it")
    func readOnlyFile() async throws {
        let directory = try TemporaryDirectory()
        let path = try await Self.restingStore(in: directory)
        chmod(path, 0o444)
        chmod(directory.path, 0o555)
        defer { chmod(directory.path, 0o755) }
        try await Self.expectReadsChangeNothing(path: path, directory: directory.path)
    }

    @Test(
        "as a user who cannot write the file or its directory, stats, list, show and check still read it",
        .enabled(
            if: UnprivilegedRun.launcher != nil,
            "runs when the tests run as root: as any other user the test above is this one"
        )
    )
    func unprivilegedReader() async throws {
        let launcher = try #require(UnprivilegedRun.launcher)
        let directory = try TemporaryDirectory()
        let path = try await Self.restingStore(in: directory)
        chmod(path, 0o444)
        chmod(directory.path, 0o555)
        defer { chmod(directory.path, 0o755) }
        try await Self.expectReadsChangeNothing(path: path, directory: directory.path, launcher: launcher)
    }

    @Test(
        "a running consumer's committed records that its write-ahead log still holds are seen, by an unprivileged reader too"
    )
    func uncheckpointedRecords() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/dedup.sqlite"
        // A consumer that checkpoints late: everything it commits stays in the write-ahead log.
        let consumer = try SQLiteDedupStore(path: path, configuration: .init(checkpointPages: 1_000_000))
        defer { consumer.close() }
        let filler = StoreFiller(store: consumer)
        try await filler.complete("orders", keys: ["o-1", "o-2", "o-3"])
        try await filler.claim("orders", key: "o-busy")
        let log = try #require(try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
        #expect(log > 0, "the records should sit in the write-ahead log")
        chmod(directory.path, 0o755)
        try await Self.expectReadsChangeNothing(path: path, directory: directory.path, storeOpenHere: true)
        if let launcher = UnprivilegedRun.launcher {
            try await Self.expectReadsChangeNothing(
                path: path,
                directory: directory.path,
                launcher: launcher,
                storeOpenHere: true
            )
        }
        // The consumer goes on writing; a new inspection sees that too.
        try await filler.complete("orders", keys: ["o-4"])
        let stats = try await InspectBinary.run(
            ["stats", "--store", "sqlite:\(path)", "--format", "json"],
            launcher: UnprivilegedRun.launcher ?? []
        )
        #expect(try stats.json().int("total") == 5, "\(stats.stderr)")
    }

    @Test("a directory at the SQLite path is unreachable (exit 3, 'Is a directory'), as the library says")
    func directoryAtPath() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/dedup.sqlite"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let library = await expectDedupError(.storeUnavailable) { try SQLiteDedupStore(path: path) }
        #expect(library?.message.contains("Is a directory") == true, "\(library?.message ?? "")")
        for command in [
            ["check"], ["stats"], ["list"], ["show", "--namespace", "orders", "k"], ["purge"],
            ["forget", "--namespace", "orders", "k"],
        ] {
            let run = try await InspectBinary.run(command + ["--store", "sqlite:\(path)", "--format", "json"])
            #expect(run.status == 3, "\(command[0]): \(run.stderr)")
            #expect(run.stderr.contains("Is a directory"), "\(command[0]): \(run.stderr)")
            #expect(
                try run.json().object("error")?.string("code") == "storeUnavailable",
                "\(command[0]): \(run.stdout)"
            )
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["dedup.sqlite"])
    }
}

/// What a reading command must leave unchanged: the directory's listing, the file's size and
/// modification time (to the nanosecond) and, unless a connection of this process has the file open,
/// its bytes: reading them here would close a descriptor of the file, and closing any descriptor
/// drops every POSIX lock this process holds on it, the open connection's too.
struct FileState: Equatable {
    var listing: [String]
    var size: Int
    var modifiedNanoseconds: Int
    var bytes: Data?

    init(_ path: String, in directory: String, readingBytes: Bool) throws {
        listing = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        var status = stat()
        guard stat(path, &status) == 0 else { throw InspectTestError("cannot stat \(path)") }
        size = Int(status.st_size)
        modifiedNanoseconds = status.st_mtim.tv_sec * 1_000_000_000 + status.st_mtim.tv_nsec
        bytes = readingBytes ? try Data(contentsOf: URL(fileURLWithPath: path)) : nil
    }
}
