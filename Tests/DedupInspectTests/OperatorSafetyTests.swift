import Dedup
import DedupSQLite
import Foundation
import Testing

@testable import DedupInspect

/// What an operator meets in a hurry: times in the wrong unit or without a zone, a reset that would
/// take most of a namespace, a live lease, a bad cursor, and output scripts and people can rely on.
/// On the SQLite suite's fresh store for each test.
extension SQLiteInspectTests {
    /// Three records of namespace "short" already expired (what purge deletes), one of "long" live.
    func fillThreeExpiredOneLive() async throws {
        let filler = StoreFiller(store: store)
        try await filler.complete("short", keys: ["s-1", "s-2", "s-3"], retention: .milliseconds(1))
        try await filler.complete("long", keys: ["l-1"])
        _ = await clockMoved(past: SystemDedupClock().nowMilliseconds() + 5)
    }

    @Test("Unix seconds given as --from are refused with a hint, not read as milliseconds from 1970")
    func secondsAreNotMilliseconds() async throws {
        try await StoreFiller(store: store).complete("orders", keys: (0..<10).map { "o-\($0)" })
        let seconds = String(SystemDedupClock().nowMilliseconds() / 1000 - 3600)
        let run = try await inspect("reset", "--store", location, "--namespace", "orders", "--from", seconds, "--yes")
        #expect(run.status == 2, "\(run.stdout)\(run.stderr)")
        #expect(run.stderr.contains(seconds + "s") && run.stderr.contains(seconds + "ms"), "\(run.stderr)")
        #expect(try await store.stats().total == 10, "nothing may be deleted")

        // With its unit the same value is an hour ago: everything here is newer.
        let explicit = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--from",
            seconds + "s",
            "--format",
            "json"
        )
        #expect(explicit.status == 0, "\(explicit.stderr)")
        #expect(try explicit.json().int("matched") == 10)
        #expect(try explicit.json().int("from_ms") == Int(seconds)! * 1000)

        let zoneless = try await inspect("list", "--store", location, "--from", "2024-05-01T12:00:00")
        #expect(zoneless.status == 2)
        #expect(zoneless.stderr.contains("2024-05-01T12:00:00Z"), "\(zoneless.stderr)")
        #expect(!zoneless.stderr.contains("invalidConfiguration"), "\(zoneless.stderr)")
    }

    @Test("reset --yes over more than --max-share of a namespace asks for --all-matching; the dry run says N of M")
    func shareGuard() async throws {
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: (0..<6).map { "old-\($0)" })
        let boundary = await timeBoundary()
        try await filler.complete("orders", keys: (0..<4).map { "new-\($0)" })
        try await filler.complete("other", keys: ["x"])

        let dry = try await inspect("reset", "--store", location, "--namespace", "orders", "--until", "\(boundary)ms")
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("would delete 6 completed records of namespace orders"), "\(dry.stdout)")
        #expect(dry.stdout.contains("6 of the namespace's 10 records (60%)"), "\(dry.stdout)")
        #expect(dry.stdout.contains("--all-matching"), "\(dry.stdout)")

        let refused = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--until",
            "\(boundary)ms",
            "--yes",
            "--format",
            "json"
        )
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("--all-matching"), "\(refused.stderr)")
        let document = try refused.json()
        #expect(document.int("matched") == 6)
        #expect(document.int("namespace_records") == 10)
        #expect(document.int("deleted") == 0)
        #expect(document.object("error")?.string("code") == "confirmationRequired")
        #expect(try await store.stats().total == 11, "a refused reset deletes nothing")

        let allowed = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--until",
            "\(boundary)ms",
            "--yes",
            "--max-share",
            "60"
        )
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(allowed.stdout.contains("deleted 6 completed records"), "\(allowed.stdout)")

        // 4 of the 4 left: over 50%, and --all-matching confirms it.
        let confirmed = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--from",
            "\(boundary)ms",
            "--yes",
            "--all-matching"
        )
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        #expect(try await store.stats().total == 1)
        let badShare = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "other",
            "--all-time",
            "--max-share",
            "150"
        )
        #expect(badShare.status == 2)
    }

    @Test("forget of a live lease warns, and deletes only with --even-if-live")
    func forgetLiveLease() async throws {
        let lease = try await StoreFiller(store: store).claim("orders", key: "busy", lease: .seconds(600))
        let dry = try await inspect("forget", "--store", location, "--namespace", "orders", "busy")
        #expect(dry.status == 0)
        #expect(dry.stderr.contains("warning: the lease"), "\(dry.stderr)")
        #expect(dry.stdout.contains("--even-if-live"), "\(dry.stdout)")

        let refused = try await inspect(
            "forget",
            "--store",
            location,
            "--namespace",
            "orders",
            "busy",
            "--yes",
            "--format",
            "json"
        )
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(try refused.json().object("error")?.string("code") == "confirmationRequired")
        #expect(try refused.json().bool("live_lease") == true)
        #expect(try await store.record(for: lease.id) != nil)

        let forced = try await inspect(
            "forget",
            "--store",
            location,
            "--namespace",
            "orders",
            "busy",
            "--yes",
            "--even-if-live"
        )
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stdout.contains("deleted 1 record"))
        #expect(forced.stderr.contains("warning"))
        #expect(try await store.record(for: lease.id) == nil)
    }

    @Test("a bad cursor is an invalid cursor in words, exit 2")
    func badCursor() async throws {
        try await StoreFiller(store: store).complete("orders", keys: ["o-1"])
        let text = try await inspect("list", "--store", location, "--cursor", "garbage")
        #expect(text.status == 2)
        #expect(text.stderr.contains("invalid cursor"), "\(text.stderr)")
        #expect(!text.stderr.contains("invalidConfiguration"), "\(text.stderr)")
        let json = try await inspect("list", "--store", location, "--cursor", "garbage", "--format", "json")
        #expect(json.status == 2)
        #expect(try json.json().object("error")?.string("message")?.contains("invalid cursor") == true)
    }

    @Test("usage errors under --format json print a JSON error document")
    func usageErrorsInJSON() async throws {
        for arguments in [
            ["stats", "--store", location, "--format", "json", "--bogus"],
            ["stats", "--format=json", location],
            ["reset", "--format", "json", "--store", location, "--namespace", "orders", "--from", "1796574600"],
        ] {
            let run = try await InspectBinary.run(arguments)
            #expect(run.status == 2, "\(arguments)")
            let error = try #require(try run.json().object("error"), "\(run.stdout)")
            #expect(error.string("code") == "usage")
            #expect(error.int("exit_code") == 2)
            #expect(error.string("message")?.isEmpty == false)
            #expect(run.stderr.contains("Error: "), "people still read it on stderr")
        }
        let text = try await inspect("stats", "--store", location, "--bogus")
        #expect(text.stdout.isEmpty)
    }

    @Test("JSON numbers are JSON numbers")
    func numbersAreNumbers() async throws {
        let check = try await inspect("check", "--store", location, "--format", "json")
        let document = try check.json()
        #expect(document["latency_ms"] is NSNumber, "\(check.stdout)")
        #expect(document.object("details")?["file_bytes"] is NSNumber, "\(check.stdout)")
    }

    @Test("counts read in the right number: 1 record, 2 records")
    func plurals() async throws {
        try await StoreFiller(store: store).complete("orders", keys: ["o-1"])
        try await StoreFiller(store: store).complete("short", keys: ["s-1"], retention: .milliseconds(1))
        _ = await clockMoved(past: SystemDedupClock().nowMilliseconds() + 5)
        let list = try await inspect("list", "--store", location)
        #expect(list.stdout.hasSuffix("\n1 record\n"), "\(list.stdout)")
        let dryReset = try await inspect("reset", "--store", location, "--namespace", "orders", "--all-time")
        #expect(dryReset.stdout.contains("would delete 1 completed record "), "\(dryReset.stdout)")
        let dryPurge = try await inspect("purge", "--store", location)
        #expect(dryPurge.stdout.contains("would delete 1 expired record;"), "\(dryPurge.stdout)")
        let purge = try await inspect("purge", "--store", location, "--yes")
        #expect(purge.stdout == "purged 1 expired record\n")
        let reset = try await inspect("reset", "--store", location, "--namespace", "orders", "--all-time", "--yes")
        #expect(reset.stdout.hasPrefix("deleted 1 completed record of namespace orders"), "\(reset.stdout)")
        #expect(counted(1, "record") == "1 record")
        #expect(counted(0, "record") == "0 records")
        #expect(counted(1234, "record") == "1,234 records")
    }

    @Test("stats counts the expired records purge would delete")
    func statsCountsExpired() async throws {
        try await fillThreeExpiredOneLive()
        let json = try await inspect("stats", "--store", location, "--format", "json")
        let document = try json.json()
        #expect(document.int("expired") == 3, "\(json.stdout)")
        #expect(document.int("total") == 1, "expired records are not live ones")
        #expect(
            document.objects("namespaces").first { $0.string("namespace") == "short" }?.int("expired") == 3,
            "\(json.stdout)"
        )
        let text = try await inspect("stats", "--store", location)
        #expect(text.stdout.contains("EXPIRED"), "\(text.stdout)")
        #expect(text.stdout.contains("purge"), "\(text.stdout)")
        let purge = try await inspect("purge", "--store", location, "--format", "json")
        #expect(try purge.json().int("expired") == 3)
    }

    @Test("migrate says what it did in one human line, without a log line")
    func migrateSpeaksPlainly() async throws {
        let newPath = directory.path + "/new.sqlite"
        let run = try await inspect("migrate", "--store", "sqlite:\(newPath)")
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.isEmpty, "\(run.stderr)")
        #expect(run.stdout.hasPrefix("sqlite:\(newPath): applied 0001_create_records"), "\(run.stdout)")
    }
}
