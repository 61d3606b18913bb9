import Dedup
import DedupInspect
import DedupSQLite
import Foundation
import Testing

/// `dedup-inspect` (the built binary) against real SQLite files.
@Suite("dedup-inspect on SQLite")
struct SQLiteInspectTests {
    let directory: TemporaryDirectory
    let path: String
    let store: SQLiteDedupStore
    var location: String { "sqlite:\(path)" }

    init() throws {
        directory = try TemporaryDirectory()
        path = directory.path + "/dedup.sqlite"
        store = try SQLiteDedupStore(path: path)
    }

    func inspect(_ arguments: String...) async throws -> InspectRun {
        try await InspectBinary.run(Array(arguments))
    }

    @Test("stats counts by namespace and state, shows coverage and in-flight owners, in text and JSON")
    func stats() async throws {
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: (0..<5).map { "o-\($0)" })
        try await filler.complete("payments", keys: ["p-1", "p-2"])
        let lease = try await filler.claim("orders", key: "o-busy")

        let json = try await inspect("stats", "--store", location, "--format", "json")
        #expect(json.status == 0, "\(json.stderr)")
        let document = try json.json()
        #expect(document.int("total") == 8)
        #expect(document.int("in_flight") == 1)
        #expect(document.int("completed") == 7)
        #expect(document.string("store") == location)
        let namespaces = document.objects("namespaces")
        #expect(namespaces.map { $0.string("namespace") } == ["orders", "payments"])
        #expect(namespaces.first?.int("completed") == 5)
        #expect(namespaces.first?.int("in_flight") == 1)
        #expect(namespaces.first?.string("oldest")?.hasSuffix("Z") == true)
        let inFlight = document.objects("in_flight_records")
        #expect(inFlight.count == 1)
        #expect(inFlight.first?.string("owner_token") == lease.ownerToken)
        #expect(inFlight.first?.string("key") == "o-busy")
        #expect((inFlight.first?.int("lease_remaining_ms") ?? 0) > 200_000)

        let text = try await inspect("stats", "--store", location)
        #expect(text.status == 0)
        #expect(text.stdout.contains("NAMESPACE"))
        #expect(text.stdout.contains("orders"))
        #expect(text.stdout.contains("(all)"))
        #expect(text.stdout.contains(lease.ownerToken))
        #expect(text.stderr.isEmpty)
    }

    @Test(
        "stats lists in-flight records longest overdue first, each with its owner label, however many live leases sort before them by key"
    )
    func statsOverdueFirst() async throws {
        let filler = StoreFiller(store: store)
        for index in 0..<25 {
            try await filler.claim("orders", key: String(format: "a-%02d", index), ownerLabel: "pod-live")
        }
        try await filler.claim("orders", key: "m-short", lease: .seconds(100), ownerLabel: "pod-short")
        let older = try await filler.claim(
            "orders",
            key: "z-older",
            lease: .milliseconds(1),
            ownerLabel: "pod-crashed-first"
        )
        _ = await clockMoved(past: older.leaseUntil.millisecondsSince1970)
        let newer = try await filler.claim(
            "orders",
            key: "y-newer",
            lease: .milliseconds(1),
            ownerLabel: "pod crashed\nsecond"
        )
        _ = await clockMoved(past: newer.leaseUntil.millisecondsSince1970)

        let json = try await inspect("stats", "--store", location, "--format", "json")
        #expect(json.status == 0, "\(json.stderr)")
        let document = try json.json()
        let inFlight = document.objects("in_flight_records")
        #expect(inFlight.count == 20)
        #expect(document.bool("in_flight_records_truncated") == true)
        #expect(inFlight.prefix(3).map { $0.string("key") } == ["z-older", "y-newer", "m-short"])
        #expect(
            inFlight.prefix(3).map { $0.string("owner_label") } == [
                "pod-crashed-first", "pod crashed\nsecond", "pod-short",
            ]
        )
        #expect(inFlight.dropFirst(3).allSatisfy { $0.string("owner_label") == "pod-live" })
        let ends = inFlight.compactMap { $0.int("lease_until_ms") }
        #expect(ends == ends.sorted(), "ordered by lease end")
        #expect((inFlight.first?.int("lease_remaining_ms") ?? 0) < 0)

        let text = try await inspect("stats", "--store", location)
        #expect(text.status == 0)
        let lines = text.stdout.split(separator: "\n")
        let header = try #require(lines.firstIndex { $0.hasPrefix("OWNER_LABEL") })
        #expect(lines[header].contains("OWNER_TOKEN"))
        #expect(lines[header + 1].hasPrefix("pod-crashed-first ") && lines[header + 1].hasSuffix("z-older"))
        #expect(lines[header + 2].hasPrefix("\"pod crashed\\nsecond\" ") && lines[header + 2].hasSuffix("y-newer"))
        #expect(text.stdout.contains("longest overdue first"))
    }

    @Test("list filters by namespace, state, key prefix and time range")
    func listFilters() async throws {
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: ["a-1", "a-2", "b-1"])
        let middle = await timeBoundary()
        try await filler.complete("orders", keys: ["a-3"])
        try await filler.complete("other", keys: ["a-1"])
        try await filler.claim("orders", key: "a-busy")

        func keys(_ extra: [String]) async throws -> [String] {
            let run = try await InspectBinary.run(["list", "--store", location, "--format", "json"] + extra)
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            #expect(document.int("count") == document.objects("records").count)
            return document.objects("records").map { "\($0.string("namespace")!)/\($0.string("key")!)" }
        }
        #expect(try await keys([]).count == 6)
        #expect(
            try await keys(["--namespace", "orders", "--state", "completed"]) == [
                "orders/a-1", "orders/a-2", "orders/a-3", "orders/b-1",
            ]
        )
        #expect(
            try await keys(["--namespace", "orders", "--key-prefix", "a-"]).sorted() == [
                "orders/a-1", "orders/a-2", "orders/a-3", "orders/a-busy",
            ]
        )
        #expect(try await keys(["--state", "in_flight"]) == ["orders/a-busy"])
        #expect(
            try await keys(["--namespace", "orders", "--state", "completed", "--until", String(middle)]) == [
                "orders/a-1", "orders/a-2", "orders/b-1",
            ]
        )
        let iso = iso(middle)
        #expect(try await keys(["--state", "completed", "--from", iso]) == ["orders/a-3", "other/a-1"])

        let text = try await inspect("list", "--store", location, "--namespace", "other")
        #expect(text.status == 0)
        let lines = text.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("STATE") == true)
        #expect(
            lines.contains {
                $0.split(separator: " ").first == "completed" && $0.split(separator: " ").suffix(2) == ["other", "a-1"]
            }
        )
        #expect(text.stdout.hasSuffix("\n1 record\n"), "\(text.stdout)")
    }

    @Test("show, forget and list find business keys by their parts (--part), encoded as the consumer encodes them")
    func businessKeyParts() async throws {
        let consumer = try IdempotentConsumer(store: store, namespace: "orders")
        let strategy = KeyStrategy<[String]>.businessKey { $0.map(Optional.some) }
        let messages = [
            ["batch-order-0", "0"], ["batch-order-1", "0"], ["batch-order-1", "1"], ["batch-order-10", "0"],
            ["batch-order-1"],
        ]
        for message in messages {
            #expect(try await consumer.process(message, keyStrategy: strategy) { _, _ in } == .applied)
        }

        let show = try await inspect(
            "show",
            "--store",
            location,
            "--namespace",
            "orders",
            "--part",
            "batch-order-0",
            "--part",
            "0",
            "--format",
            "json"
        )
        #expect(show.status == 0, "\(show.stderr)")
        #expect(try show.json().object("record")?.string("key") == "13:batch-order-0;1:0;")

        func listed(_ arguments: String...) async throws -> [String] {
            let run = try await InspectBinary.run(["list", "--store", location, "--format", "json"] + arguments)
            #expect(run.status == 0, "\(run.stderr)")
            return try run.json().objects("records").compactMap { $0.string("key") }
        }
        // The leading part's encoding is the prefix: batch-order-10 is not batch-order-1.
        #expect(
            try await listed("--namespace", "orders", "--part", "batch-order-1") == [
                "13:batch-order-1;", "13:batch-order-1;1:0;", "13:batch-order-1;1:1;",
            ]
        )
        #expect(try await listed("--part", "batch-order-1", "--part", "1") == ["13:batch-order-1;1:1;"])
        #expect(try await listed("--namespace", "orders", "--key-prefix", "batch-order-1").isEmpty)

        let forget = try await inspect(
            "forget",
            "--store",
            location,
            "--namespace",
            "orders",
            "--part",
            "batch-order-1",
            "--part",
            "0",
            "--yes"
        )
        #expect(forget.status == 0, "\(forget.stderr)")
        #expect(
            try await store.record(
                for: RecordID(namespace: "orders", key: BusinessKey.encode(["batch-order-1", "0"])!)
            ) == nil
        )
        #expect(try await listed("--part", "batch-order-1") == ["13:batch-order-1;", "13:batch-order-1;1:1;"])

        for arguments in [
            ["show", "--namespace", "orders", "13:batch-order-0;1:0;", "--part", "0"],
            ["show", "--namespace", "orders"],
            ["forget", "--namespace", "orders", "--part", "batch-order-0", "--part", ""],
            ["list", "--part", "batch-order-1", "--key-prefix", "13:"],
            ["list", "--part", ""],
        ] {
            let run = try await InspectBinary.run(arguments + ["--store", location])
            #expect(run.status == 2, "\(arguments): \(run.stderr)")
        }
    }

    @Test("list pages with --limit and --cursor: every record exactly once, in order")
    func listPaging() async throws {
        let keys = (0..<257).map { String(format: "k-%04d", $0) }
        try await StoreFiller(store: store).complete("paged", keys: keys)
        var seen: [String] = []
        var cursor: String?
        var pages = 0
        repeat {
            var arguments = ["list", "--store", location, "--format", "json", "--limit", "50", "--batch-size", "17"]
            if let cursor { arguments += ["--cursor", cursor] }
            let run = try await InspectBinary.run(arguments)
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            let page = document.objects("records").map { $0.string("key")! }
            #expect(page.count <= 50)
            seen += page
            cursor = document.string("next_cursor")
            pages += 1
        } while cursor != nil && pages < 20
        #expect(seen == keys)

        let text = try await inspect("list", "--store", location, "--limit", "10")
        #expect(text.stdout.contains("next cursor: "))
    }

    @Test("show prints the whole record; a missing record exits 1")
    func show() async throws {
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: ["order 42\nline 2"], result: Data(repeating: 7, count: 1234))
        let json = try await inspect(
            "show",
            "--store",
            location,
            "--namespace",
            "orders",
            "--format",
            "json",
            "order 42\nline 2"
        )
        #expect(json.status == 0, "\(json.stderr)")
        let record = try #require(try json.json().object("record"))
        #expect(record.string("key") == "order 42\nline 2")
        #expect(record.string("state") == "completed")
        #expect(record.int("fencing_token") == 1)
        #expect(record.int("attempt") == 1)
        #expect(record.int("result_size") == 1234)
        #expect(record.string("result_base64") == Data(repeating: 7, count: 1234).base64EncodedString())
        #expect(record["owner_token"] is NSNull)
        let completedMs = try #require(record.int("completed_at_ms"))
        #expect(record.string("completed_at") == iso(Int64(completedMs)))
        #expect(record.int("expires_at_ms") == completedMs + 3_600_000)

        let text = try await inspect("show", "--store", location, "--namespace", "orders", "order 42\nline 2")
        #expect(text.stdout.contains("fencing token:"))
        #expect(text.stdout.contains("\"order 42\\nline 2\""))
        #expect(text.stdout.contains("1,234 bytes"))

        #expect(record["owner_label"] is NSNull, "a completed record keeps no holder")

        try await StoreFiller(store: store).claim("orders", key: "held", ownerLabel: "pod-9 (eu-west)")
        let held = try await inspect("show", "--store", location, "--namespace", "orders", "--format", "json", "held")
        #expect(try held.json().object("record")?.string("owner_label") == "pod-9 (eu-west)")
        let heldText = try await inspect("show", "--store", location, "--namespace", "orders", "held")
        #expect(
            heldText.stdout.split(separator: "\n").contains {
                $0.hasPrefix("owner label:") && $0.hasSuffix(" pod-9 (eu-west)")
            }
        )

        let missing = try await inspect("show", "--store", location, "--namespace", "orders", "nope")
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no record"))
        let missingJSON = try await inspect(
            "show",
            "--store",
            location,
            "--namespace",
            "orders",
            "nope",
            "--format",
            "json"
        )
        #expect(missingJSON.status == 1)
        #expect(try missingJSON.json().bool("found") == false)
    }

    @Test("forget is a dry run without --yes, deletes with it, and exits 1 for a missing record")
    func forget() async throws {
        try await StoreFiller(store: store).complete("orders", keys: ["o-1"])
        let id = try RecordID(namespace: "orders", key: "o-1")

        let dry = try await inspect("forget", "--store", location, "--namespace", "orders", "o-1", "--format", "json")
        #expect(dry.status == 0)
        let dryDocument = try dry.json()
        #expect(dryDocument.bool("dry_run") == true)
        #expect(dryDocument.int("matched") == 1)
        #expect(dryDocument.int("deleted") == 0)
        #expect(try await store.record(for: id) != nil)

        let text = try await inspect("forget", "--store", location, "--namespace", "orders", "o-1")
        #expect(text.stdout.contains("dry run: would delete 1 record"))
        #expect(try await store.record(for: id) != nil)

        let real = try await inspect("forget", "--store", location, "--namespace", "orders", "o-1", "--yes")
        #expect(real.status == 0)
        #expect(real.stdout.contains("deleted 1 record"))
        #expect(try await store.record(for: id) == nil)

        let again = try await inspect(
            "forget",
            "--store",
            location,
            "--namespace",
            "orders",
            "o-1",
            "--yes",
            "--format",
            "json"
        )
        #expect(again.status == 1)
        #expect(try again.json().int("deleted") == 0)
    }

    @Test("reset then replay through IdempotentConsumer re-applies exactly the reset range")
    func resetThenReplay() async throws {
        let consumer = try IdempotentConsumer(store: store, namespace: "billing")
        let otherGroup = try IdempotentConsumer(store: store, namespace: "audit")
        let before = (0..<30).map { "m-a\($0)" }
        let inside = (0..<40).map { "m-b\($0)" }
        let after = (0..<30).map { "m-c\($0)" }
        func deliver(_ keys: [String], to consumer: IdempotentConsumer) async throws -> [String] {
            var applied: [String] = []
            for key in keys {
                let outcome = try await consumer.process(key: key) { _ in }
                if outcome == .applied { applied.append(key) }
            }
            return applied
        }
        #expect(try await deliver(before, to: consumer) == before)
        let from = await timeBoundary()
        #expect(try await deliver(inside, to: consumer) == inside)
        #expect(try await deliver(inside, to: otherGroup) == inside)
        let until = await timeBoundary()
        #expect(try await deliver(after, to: consumer) == after)
        let busy = try await StoreFiller(store: store).claim("billing", key: "m-b-busy")

        // Dry run: counts exactly the range, changes nothing.
        let dry = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "billing",
            "--from",
            iso(from),
            "--until",
            String(until),
            "--format",
            "json"
        )
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryDocument = try dry.json()
        #expect(dryDocument.bool("dry_run") == true)
        #expect(dryDocument.int("matched") == inside.count)
        #expect(dryDocument.int("deleted") == 0)
        #expect(dryDocument.objects("sample").count == 10)
        #expect(try await deliver(before + inside + after, to: consumer).isEmpty, "a dry run must change nothing")

        let real = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "billing",
            "--from",
            iso(from),
            "--until",
            String(until),
            "--yes",
            "--batch-size",
            "7"
        )
        #expect(real.status == 0, "\(real.stderr)")
        #expect(real.stdout.contains("deleted 40 completed records"))

        // The replay of everything: only the reset range runs again; the other group, the in-flight
        // claim and the records outside the range are untouched.
        #expect(try await deliver(before + inside + after, to: consumer) == inside)
        #expect(try await deliver(inside, to: otherGroup).isEmpty)
        #expect(try await store.record(for: busy.id)?.ownerToken == busy.ownerToken)

        // Nothing left to reset in that range now that it is completed again? It is: completed anew,
        // but now (after `until`), so the old range matches nothing: exit 1.
        let empty = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "billing",
            "--from",
            iso(from),
            "--until",
            String(until),
            "--yes"
        )
        #expect(empty.status == 1)
        #expect(empty.stderr.contains("nothing matched"))
    }

    @Test("reset refuses an unbounded or inverted range (exit 2) and a mistyped namespace matches nothing (exit 1)")
    func resetArguments() async throws {
        try await StoreFiller(store: store).complete("orders", keys: ["o-1"])
        let unbounded = try await inspect("reset", "--store", location, "--namespace", "orders")
        #expect(unbounded.status == 2)
        #expect(unbounded.stderr.contains("--all-time"))
        let inverted = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--from",
            "2024-05-02T00:00Z",
            "--until",
            "2024-05-01T00:00Z"
        )
        #expect(inverted.status == 2)
        let badTime = try await inspect("reset", "--store", location, "--namespace", "orders", "--from", "last tuesday")
        #expect(badTime.status == 2)
        let typo = try await inspect("reset", "--store", location, "--namespace", "ordres", "--all-time", "--yes")
        #expect(typo.status == 1)
        let all = try await inspect(
            "reset",
            "--store",
            location,
            "--namespace",
            "orders",
            "--all-time",
            "--yes",
            "--format",
            "json"
        )
        #expect(all.status == 0)
        #expect(try all.json().int("deleted") == 1)
    }

    @Test("purge is a dry run without --yes and reports what it removed with it")
    func purge() async throws {
        try await fillThreeExpiredOneLive()

        let dry = try await inspect("purge", "--store", location, "--format", "json")
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryDocument = try dry.json()
        #expect(dryDocument.bool("dry_run") == true)
        #expect(dryDocument.int("expired") == 3)
        #expect(dryDocument.int("deleted") == 0)

        let real = try await inspect("purge", "--store", location, "--yes", "--format", "json", "--batch-size", "2")
        #expect(real.status == 0, "\(real.stderr)")
        #expect(try real.json().int("deleted") == 3)
        let text = try await inspect("purge", "--store", location, "--yes")
        #expect(text.stdout.contains("purged 0 expired records"))
        #expect(try await store.stats().total == 1)
    }

    @Test("check reports reachability, latency and schema; migrate creates a store; a missing file exits 3")
    func checkAndMigrate() async throws {
        let check = try await inspect("check", "--store", location, "--format", "json")
        #expect(check.status == 0, "\(check.stderr)")
        let document = try check.json()
        #expect(document.string("backend") == "sqlite")
        #expect(document.bool("reachable") == true)
        #expect(document.bool("ok") == true)
        #expect(document.int("round_trips") == 5)
        #expect(document.int("latency_us") != nil)

        let text = try await inspect("check", "--store", location)
        #expect(text.stdout.contains("round trip:"))

        let newPath = directory.path + "/new.sqlite"
        let missing = try await inspect("check", "--store", "sqlite:\(newPath)")
        #expect(missing.status == 3)
        #expect(!FileManager.default.fileExists(atPath: newPath), "check must not create a store")
        let stats = try await inspect("stats", "--store", "sqlite:\(newPath)", "--format", "json")
        #expect(stats.status == 3)
        #expect(try stats.json().object("error")?.int("exit_code") == 3)

        let migrate = try await inspect("migrate", "--store", "sqlite:\(newPath)", "--format", "json")
        #expect(migrate.status == 0, "\(migrate.stderr)")
        #expect(FileManager.default.fileExists(atPath: newPath))
        let after = try await inspect("check", "--store", "sqlite:\(newPath)")
        #expect(after.status == 0)

        // An empty file has the whole schema pending: exit 5, and check leaves it as it was.
        let emptyPath = directory.path + "/empty.sqlite"
        #expect(FileManager.default.createFile(atPath: emptyPath, contents: nil))
        let behind = try await inspect("check", "--store", "sqlite:\(emptyPath)", "--format", "json")
        #expect(behind.status == 5, "\(behind.stderr)")
        let schema = try #require(try behind.json().object("schema"))
        #expect(schema.string("status") == "behind")
        #expect(schema.int("version") == 0)
        #expect((schema["pending"] as? [String])?.first == "0001_create_records")
        #expect(try FileManager.default.attributesOfItem(atPath: emptyPath)[.size] as? Int == 0)
        // Reading and deleting commands refuse it too (exit 5), rather than writing a schema into it.
        for command in [
            ["stats"], ["list"], ["show", "--namespace", "orders", "k"],
            ["forget", "--namespace", "orders", "k", "--yes"],
            ["reset", "--namespace", "orders", "--all-time", "--yes"], ["purge", "--yes"],
        ] {
            let refused = try await InspectBinary.run(command + ["--store", "sqlite:\(emptyPath)"])
            #expect(refused.status == 5, "\(command): \(refused.stderr)")
            #expect(refused.stderr.contains("dedup-inspect migrate"), "\(refused.stderr)")
        }
        let refusedJSON = try await inspect("stats", "--store", "sqlite:\(emptyPath)", "--format", "json")
        #expect(refusedJSON.status == 5)
        #expect(try refusedJSON.json().object("error")?.string("code") == "schemaOutdated", "\(refusedJSON.stdout)")
        #expect(try FileManager.default.attributesOfItem(atPath: emptyPath)[.size] as? Int == 0)

        // A file that is not a database: a store error (4), not "unreachable".
        let junkPath = directory.path + "/junk.sqlite"
        #expect(FileManager.default.createFile(atPath: junkPath, contents: Data(repeating: 0x41, count: 4096)))
        let junk = try await inspect("check", "--store", "sqlite:\(junkPath)")
        #expect(junk.status == 4, "\(junk.stderr)")
    }

    @Test("progress shows on stderr only when asked or on a terminal; piped output stays quiet")
    func progress() async throws {
        try await StoreFiller(store: store).complete("orders", keys: (0..<50).map { "o-\($0)" })
        let quiet = try await inspect("list", "--store", location, "--batch-size", "5")
        #expect(quiet.stderr.isEmpty)
        let forced = try await inspect("list", "--store", location, "--batch-size", "5", "--progress", "always")
        #expect(forced.stderr.contains("listed"))
        #expect(forced.stdout == quiet.stdout)
    }

    @Test("DEDUP_STORE stands in for --store; no store at all is a usage error")
    func storeFromEnvironment() async throws {
        let run = try await InspectBinary.run(["stats", "--format", "json"], environment: ["DEDUP_STORE": location])
        #expect(run.status == 0)
        let none = try await InspectBinary.run(["stats"])
        #expect(none.status == 2)
        #expect(none.stderr.contains("--store"))
        let bad = try await InspectBinary.run(["stats", "--store", "postgres://x"])
        #expect(bad.status == 2)
    }
}

/// The ISO 8601 spelling of milliseconds, as the tool prints it.
func iso(_ milliseconds: Int64) -> String {
    Timestamp.format(milliseconds: milliseconds)
}
