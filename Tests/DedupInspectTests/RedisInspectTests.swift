import Dedup
import DedupInspect
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

/// `dedup-inspect` (the built binary) against a real redis-server started for each test.
@Suite("dedup-inspect on Redis")
struct RedisInspectTests {
    func inspect(_ arguments: [String]) async throws -> InspectRun {
        try await InspectBinary.run(arguments)
    }

    @Test("stats, list, show, forget, reset and purge work against Redis in both formats")
    func subcommands() async throws {
        try await withRedisServer { server in try await subcommands(url: server.url(password: nil)) }
    }

    /// The subcommands on the store at `location`: a single server's, or a cluster's.
    func subcommands(url location: String) async throws {
        let store = try RedisDedupStore(url: location)
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: (0..<120).map { "o-\($0)" }, result: Data("ok".utf8))
        try await filler.complete("payments", keys: ["p-1"])
        let lease = try await filler.claim("orders", key: "o-busy")

        let stats = try await inspect(["stats", "--store", location, "--format", "json"])
        #expect(stats.status == 0, "\(stats.stderr)")
        let statsDocument = try stats.json()
        #expect(statsDocument.int("total") == 122)
        #expect(statsDocument.objects("in_flight_records").first?.string("owner_token") == lease.ownerToken)
        #expect(
            statsDocument.objects("in_flight_records").first?.string("owner_label") == ClaimRequest.defaultOwnerLabel
        )
        let statsText = try await inspect(["stats", "--store", location])
        #expect(statsText.stdout.contains("payments"))

        // Scan order: compare as sets, and no record twice across pages.
        var seen: [String] = []
        var cursor: String?
        var rounds = 0
        repeat {
            var arguments = ["list", "--store", location, "--format", "json", "--namespace", "orders", "--limit", "25"]
            if let cursor { arguments += ["--cursor", cursor] }
            let run = try await inspect(arguments)
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            seen += document.objects("records").map { $0.string("key")! }
            cursor = document.string("next_cursor")
            rounds += 1
        } while cursor != nil && rounds < 100
        #expect(seen.count == 121)
        #expect(Set(seen) == Set((0..<120).map { "o-\($0)" } + ["o-busy"]))

        let show = try await inspect(["show", "--store", location, "--namespace", "orders", "o-7", "--format", "json"])
        #expect(show.status == 0)
        #expect(try show.json().object("record")?.int("result_size") == 2)
        let missing = try await inspect(["show", "--store", location, "--namespace", "orders", "o-missing"])
        #expect(missing.status == 1)

        let dryForget = try await inspect(["forget", "--store", location, "--namespace", "orders", "o-7"])
        #expect(dryForget.status == 0)
        #expect(try await store.record(for: RecordID(namespace: "orders", key: "o-7")) != nil)
        let forget = try await inspect(["forget", "--store", location, "--namespace", "orders", "o-7", "--yes"])
        #expect(forget.status == 0)
        #expect(try await store.record(for: RecordID(namespace: "orders", key: "o-7")) == nil)

        let dryReset = try await inspect([
            "reset", "--store", location, "--namespace", "orders", "--all-time", "--format", "json",
        ])
        #expect(try dryReset.json().int("matched") == 119)
        #expect(try await store.stats().total == 121)
        let reset = try await inspect([
            "reset", "--store", location, "--namespace", "orders", "--all-time", "--yes", "--batch-size", "10",
            "--format", "json",
        ])
        #expect(reset.status == 0, "\(reset.stderr)")
        #expect(try reset.json().int("deleted") == 119)
        #expect(try await store.stats().total == 2, "the in-flight record and the other namespace stay")

        let purge = try await inspect(["purge", "--store", location, "--yes", "--format", "json"])
        #expect(purge.status == 0, "\(purge.stderr)")
    }

    @Test("reset then replay through IdempotentConsumer re-applies exactly the reset range (Redis clock)")
    func resetThenReplay() async throws {
        try await withRedisServer { server in try await resetThenReplay(server) }
    }

    func resetThenReplay(_ server: RedisServer) async throws {
        let store = try RedisDedupStore(url: server.url(password: nil))
        let consumer = try IdempotentConsumer(store: store, namespace: "billing")
        func deliver(_ keys: [String]) async throws -> [String] {
            var applied: [String] = []
            for key in keys where try await consumer.process(key: key, { _ in }) == .applied { applied.append(key) }
            return applied
        }
        let before = (0..<20).map { "a\($0)" }
        let inside = (0..<20).map { "b\($0)" }
        let after = (0..<20).map { "c\($0)" }
        #expect(try await deliver(before) == before)
        let from = await timeBoundary()
        #expect(try await deliver(inside) == inside)
        let until = await timeBoundary()
        #expect(try await deliver(after) == after)
        // The Redis store stamps records with the server's clock; on loopback it is this host's.
        let reset = try await inspect([
            "reset", "--store", server.url(password: nil), "--namespace", "billing", "--from", String(from), "--until",
            String(until), "--yes",
        ])
        #expect(reset.status == 0, "\(reset.stderr)")
        #expect(try await deliver(before + inside + after) == inside)
    }

    @Test("check reports the round trip; migrate has nothing to do")
    func checkAndMigrate() async throws {
        try await withRedisServer(arguments: RedisCheckTests.production) { server in try await checkAndMigrate(server) }
    }

    func checkAndMigrate(_ server: RedisServer) async throws {
        let check = try await inspect(["check", "--store", server.url(password: nil), "--format", "json"])
        #expect(check.status == 0, "\(check.stderr)")
        let document = try check.json()
        #expect(document.string("backend") == "redis")
        #expect(document.bool("ok") == true)
        #expect(document.int("latency_us") != nil)
        let migrate = try await inspect(["migrate", "--store", server.url(password: nil)])
        #expect(migrate.status == 0)
        #expect(migrate.stdout.contains("no schema"))
    }

    @Test("passwords never appear in output: success, wrong password (exit 4), unreachable (exit 3)")
    func credentialsAreNeverPrinted() async throws {
        let secret = "s3cret-Pa55"
        try await withRedisServer(password: secret, arguments: RedisCheckTests.production) { server in
            try await credentialsAreNeverPrinted(server, secret: secret)
        }
    }

    func credentialsAreNeverPrinted(_ server: RedisServer, secret: String) async throws {
        for format in ["text", "json"] {
            let good = try await inspect(["check", "--store", server.url(password: secret), "--format", format])
            #expect(good.status == 0, "\(good.stderr)")
            #expect(good.stdout.contains(":***@"))
            #expect(!good.stdout.contains(secret) && !good.stderr.contains(secret))

            let wrong = "wrong-Pa55word"
            let refused = try await inspect([
                "stats", "--store", "redis://:\(wrong)@127.0.0.1:\(server.port!)/0", "--format", format,
            ])
            #expect(refused.status == 4, "\(refused.stderr)")
            #expect(!refused.stdout.contains(wrong) && !refused.stderr.contains(wrong))
            #expect(refused.stderr.contains(":***@"))

            let port = closedLoopbackPort()
            let down = try await inspect([
                "list", "--store", "redis://admin:\(secret)@127.0.0.1:\(port)/0", "--format", format,
            ])
            #expect(down.status == 3, "\(down.stderr)")
            #expect(!down.stdout.contains(secret) && !down.stderr.contains(secret))
            #expect(down.stderr.contains("admin:***@"))
            if format == "json" {
                #expect(try down.json().object("error")?.int("exit_code") == 3)
            }
        }
        // Through the environment the password is not even in the process's arguments.
        let viaEnvironment = try await InspectBinary.run(
            ["check"],
            environment: ["DEDUP_STORE": server.url(password: secret)]
        )
        #expect(viaEnvironment.status == 0)
        #expect(!viaEnvironment.stdout.contains(secret))
    }
}
