import Dedup
import DedupInspect
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import DedupTestSupport
import Foundation
import Synchronization
import Testing

/// `dedup-inspect replay` (the built binary) against a real redis-server holding the stream, with
/// the dedup store in a real SQLite file or in Redis: what a dry run shows, and that `--yes`
/// re-applies exactly the entries of [T1, T2) when the group reads again, the entry at T1 included.
@Suite("dedup-inspect replay: coordinated replay through a Redis stream's consumer group")
struct ReplayCommandTests {
    /// Entry IDs around T1 = 3000 ms and T2 = 5000 ms: one just before T1, two exactly at it.
    static let entryIDs = ["1000-0", "2000-0", "2999-5", "3000-0", "3000-1", "4000-0", "5000-0", "6000-0"]
    static let t1: Int64 = 3000
    static let t2: Int64 = 5000
    static let stream = "events"
    static let group = "billing-group"
    static let namespace = "billing"

    enum StoreKind: String, CaseIterable, Sendable { case sqlite, redis }

    /// A dedup store of `kind` (SQLite in a temporary file, or Redis on `server`) and its `--store`.
    func withStore<R>(
        _ kind: StoreKind,
        on server: RedisServer,
        _ body: (any DedupStore, String) async throws -> R
    ) async throws -> R {
        switch kind {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let path = directory.path + "/dedup.sqlite"
            return try await body(try SQLiteDedupStore(path: path), "sqlite:\(path)")
        case .redis:
            let store = try RedisDedupStore(url: server.url(password: nil))
            let result = try await body(store, server.url(password: nil))
            await store.close()
            return result
        }
    }

    /// `redis://127.0.0.1:PORT/KEY`.
    func streamURL(_ server: RedisServer, key: String = Self.stream) -> String {
        "redis://127.0.0.1:\(server.port!)/\(key)"
    }

    /// Adds the entries with their explicit IDs and creates the group at the beginning.
    func fillStream(_ server: RedisServer) async throws {
        for id in Self.entryIDs { try await server.cli("XADD", Self.stream, id, "payload", "p") }
        try await server.cli("XGROUP", "CREATE", Self.stream, Self.group, "0")
    }

    /// Reads the group's new entries (`XREADGROUP … >`) and returns their IDs, in order.
    func readGroup(_ server: RedisServer, count: Int = 100) async throws -> [String] {
        let output = try await server.cli(
            "XREADGROUP",
            "GROUP",
            Self.group,
            "consumer-1",
            "COUNT",
            String(count),
            "STREAMS",
            Self.stream,
            ">"
        )
        // redis-cli prints one value a line: the key, then each ID followed by its field and value.
        return output.split(separator: "\n").map(String.init).filter { $0.wholeMatch(of: /\d+-\d+/) != nil }
    }

    /// The group's last-delivered ID and pending count, as the server says.
    func groupState(_ server: RedisServer) async throws -> (last: String, pending: Int) {
        let lines = try await server.cli("XINFO", "GROUPS", Self.stream).split(separator: "\n").map(String.init)
        let last = lines[try #require(lines.firstIndex(of: "last-delivered-id")) + 1]
        let pending = Int(lines[try #require(lines.firstIndex(of: "pending")) + 1])!
        return (last, pending)
    }

    /// Processes entries as a consumer of the group does: key = entry ID, broker time = the ID's
    /// milliseconds; acks each. Returns the outcomes by ID.
    func consume(
        _ ids: [String],
        consumer: IdempotentConsumer,
        ledger: borrowing Mutex<[String: Int]>,
        server: RedisServer,
        ack: Bool = true
    ) async throws -> [String: ProcessOutcome] {
        var outcomes: [String: ProcessOutcome] = [:]
        for id in ids {
            let milliseconds = Int64(id.split(separator: "-")[0])!
            outcomes[id] = try await consumer.process(key: id, brokerTime: Date(millisecondsSince1970: milliseconds)) {
                _ in
                ledger.withLock { $0[id, default: 0] += 1 }
            }
            if ack { try await server.cli("XACK", Self.stream, Self.group, id) }
        }
        return outcomes
    }

    func replay(_ store: String, _ server: RedisServer, _ extra: [String]) async throws -> InspectRun {
        try await InspectBinary.run(
            [
                "replay", "--store", store, "--namespace", Self.namespace, "--stream", streamURL(server), "--group",
                Self.group,
            ] + extra
        )
    }

    // MARK: --yes

    @Test(
        "--yes re-applies exactly the entries of [T1, T2), the ones at T1 included; later ones are duplicates",
        arguments: StoreKind.allCases
    )
    func replayReappliesRange(kind: StoreKind) async throws {
        try await withRedisServer { server in
            try await fillStream(server)
            try await withStore(kind, on: server) { store, location in
                let consumer = try IdempotentConsumer(store: store, namespace: Self.namespace)
                let ledger = Mutex<[String: Int]>([:])
                let firstRead = try await readGroup(server)
                #expect(firstRead == Self.entryIDs)
                _ = try await consume(firstRead, consumer: consumer, ledger: ledger, server: server)
                #expect(try await groupState(server).last == "6000-0")

                let run = try await replay(
                    location,
                    server,
                    ["--from", "\(Self.t1)ms", "--until", "\(Self.t2)ms", "--yes", "--format", "json"]
                )
                #expect(run.status == 0, "\(run.stderr)")
                let document = try run.json()
                #expect(document.int("deleted") == 3, "3000-0, 3000-1 and 4000-0")
                #expect(document.string("position") == "6000-0")
                #expect(document.string("new_position") == "2999-18446744073709551615")
                #expect(document["moved"] as? Bool == true)
                #expect(try await groupState(server).last == "2999-18446744073709551615")

                // The group reads again from just before T1: the entries at T1 come again (SETID to
                // 3000-0 would have skipped 3000-0), the one just before it does not.
                let secondRead = try await readGroup(server)
                #expect(secondRead == ["3000-0", "3000-1", "4000-0", "5000-0", "6000-0"])
                let outcomes = try await consume(secondRead, consumer: consumer, ledger: ledger, server: server)
                #expect(
                    outcomes["3000-0"] == .applied && outcomes["3000-1"] == .applied && outcomes["4000-0"] == .applied
                )
                for id in ["5000-0", "6000-0"] {
                    guard case .duplicate = outcomes[id] else {
                        Issue.record(
                            "\(id), after the range, should be a duplicate: \(String(describing: outcomes[id]))"
                        )
                        continue
                    }
                }
                let applied = ledger.withLock { $0 }
                for id in Self.entryIDs {
                    let milliseconds = Int64(id.split(separator: "-")[0])!
                    #expect(applied[id] == ((Self.t1..<Self.t2).contains(milliseconds) ? 2 : 1), "\(id)")
                }
            }
        }
    }

    // MARK: Dry run

    @Test(
        "A dry run changes nothing and shows the records, both positions, the pending count and a trimmed-history warning"
    )
    func dryRun() async throws {
        try await withRedisServer { server in
            try await fillStream(server)
            try await withStore(.sqlite, on: server) { store, location in
                let consumer = try IdempotentConsumer(store: store, namespace: Self.namespace)
                let ledger = Mutex<[String: Int]>([:])
                let read = try await readGroup(server)
                // The last entry stays unacknowledged: one pending entry.
                _ = try await consume(Array(read.dropLast()), consumer: consumer, ledger: ledger, server: server)
                _ = try await consume([read.last!], consumer: consumer, ledger: ledger, server: server, ack: false)
                // History before 2000 ms is trimmed away.
                try await server.cli("XTRIM", Self.stream, "MINID", "2000")

                let text = try await replay(location, server, ["--from", "1500ms", "--until", "\(Self.t2)ms"])
                #expect(text.status == 0, "\(text.stderr)")
                #expect(
                    text.stdout.contains("dry run: would delete 5 completed records of namespace billing"),
                    "\(text.stdout)"
                )
                #expect(text.stdout.contains("3000-1"), "the sample lists the records")
                #expect(text.stdout.contains("6000-0 (the last entry delivered to the group)"), "\(text.stdout)")
                #expect(text.stdout.contains("would move to:    1499-18446744073709551615"), "\(text.stdout)")
                #expect(text.stdout.contains("pending entries:  1"), "\(text.stdout)")
                #expect(text.stdout.contains("warning: the stream's first entry (2000-0"), "\(text.stdout)")
                #expect(text.stdout.contains("warning: the group has 1 pending entry"), "\(text.stdout)")

                let json = try await replay(
                    location,
                    server,
                    ["--from", "1500ms", "--until", "\(Self.t2)ms", "--format", "json"]
                )
                let document = try json.json()
                #expect(document["dry_run"] as? Bool == true && document["moved"] as? Bool == false)
                #expect(document.int("matched") == 5 && document.int("deleted") == 0)
                #expect(
                    document.string("position") == "6000-0"
                        && document.string("new_position") == "1499-18446744073709551615"
                )
                #expect(document.int("pending") == 1 && document.string("first_entry") == "2000-0")
                #expect((document["warnings"] as? [String])?.count == 2)

                // Nothing changed: every record is still there, the group where it was.
                let page = try await store.records(
                    matching: RecordFilter(namespace: Self.namespace),
                    after: nil,
                    limit: 100
                )
                #expect(page.records.count == Self.entryIDs.count)
                let state = try await groupState(server)
                #expect(state.last == "6000-0" && state.pending == 1)
            }
        }
    }

    // MARK: Refusals

    @Test(
        "Refused with nothing changed: missing stream or group, wrong key type, --from ahead of the group, nothing matched"
    )
    func refusals() async throws {
        try await withRedisServer { server in
            try await fillStream(server)
            try await withStore(.redis, on: server) { store, location in
                let consumer = try IdempotentConsumer(store: store, namespace: Self.namespace)
                let ledger = Mutex<[String: Int]>([:])
                // The group has been given the first two entries only.
                _ = try await consume(
                    try await readGroup(server, count: 2),
                    consumer: consumer,
                    ledger: ledger,
                    server: server
                )
                func records() async throws -> Int {
                    try await store.records(matching: RecordFilter(namespace: Self.namespace), after: nil, limit: 100)
                        .records.count
                }

                let range = ["--from", "1000ms", "--until", "\(Self.t2)ms", "--yes"]
                let noStream = try await InspectBinary.run(
                    [
                        "replay", "--store", location, "--namespace", Self.namespace, "--stream",
                        streamURL(server, key: "nope"), "--group", Self.group,
                    ]
                        + range + ["--format", "json"]
                )
                #expect(noStream.status == 1)
                #expect(noStream.stderr.contains("does not exist"), "\(noStream.stderr)")
                #expect((try noStream.json()["error"] as? [String: Any])?["code"] as? String == "notFound")

                let noGroup = try await InspectBinary.run(
                    [
                        "replay", "--store", location, "--namespace", Self.namespace, "--stream", streamURL(server),
                        "--group", "other",
                    ] + range
                )
                #expect(noGroup.status == 1)
                #expect(
                    noGroup.stderr.contains("has no consumer group other (its groups: \(Self.group))"),
                    "\(noGroup.stderr)"
                )

                try await server.cli("SET", "plain-string", "x")
                let wrongType = try await InspectBinary.run(
                    [
                        "replay", "--store", location, "--namespace", Self.namespace, "--stream",
                        streamURL(server, key: "plain-string"), "--group", Self.group,
                    ]
                        + range
                )
                #expect(wrongType.status == 4)
                #expect(wrongType.stderr.contains("holds no stream"), "\(wrongType.stderr)")

                // Position 2000-0; --from 4000 would move the group forward past 2999-5 and 3000-*.
                let ahead = try await replay(location, server, ["--from", "4000ms", "--yes"])
                #expect(ahead.status == 2)
                #expect(ahead.stderr.contains("--even-if-ahead"), "\(ahead.stderr)")
                let aheadDryRun = try await replay(location, server, ["--from", "1000ms", "--until", "2000ms"])
                #expect(
                    !aheadDryRun.stdout.contains("--even-if-ahead"),
                    "1000 ms is behind the position: \(aheadDryRun.stdout)"
                )

                let nothing = try await InspectBinary.run(
                    [
                        "replay", "--store", location, "--namespace", "bilinng", "--stream", streamURL(server),
                        "--group", Self.group,
                    ] + range
                )
                #expect(nothing.status == 1)
                #expect(nothing.stderr.contains("the group was not moved"), "\(nothing.stderr)")

                #expect(try await records() == 2)
                #expect(try await groupState(server).last == "2000-0")

                // A range behind the position goes through (the whole namespace: --all-matching).
                let behind = try await replay(location, server, ["--from", "1000ms", "--yes", "--all-matching"])
                #expect(behind.status == 0, "\(behind.stderr)")
                #expect(try await groupState(server).last == "999-18446744073709551615")
                #expect(try await records() == 0)
            }
        }
    }

    @Test("The stream location: key percent-decoded, database in ?db=N, unix socket with ?key=, password hidden")
    func streamLocation() throws {
        let tcp = try RedisStreamLocation(url: "redis://user:s3cr%40t@example.org:6380/orders%2Feu?db=2")
        #expect(tcp.key == "orders/eu")
        #expect(tcp.endpoint.database == 2 && tcp.endpoint.password == "s3cr@t" && tcp.endpoint.username == "user")
        #expect(tcp.endpoint.transport == .tcp(host: "example.org", port: 6380))
        #expect(tcp.description == "redis://user:***@example.org:6380/orders%2Feu?db=2")
        let socket = try RedisStreamLocation(url: "unix://:pw@/run/redis.sock?key=events&db=1")
        #expect(
            socket.key == "events" && socket.endpoint.transport == .unixSocket(path: "/run/redis.sock")
                && socket.endpoint.database == 1
        )
        #expect(!socket.description.contains("pw"))
        #expect(throws: DedupError.self) { try RedisStreamLocation(url: "redis://:pw@host:6379") }
        #expect(throws: DedupError.self) { try RedisStreamLocation(url: "redis://host:6379/") }
        #expect(throws: DedupError.self) { try RedisStreamLocation(url: "unix:///run/redis.sock") }
        #expect(StreamEntryID.justBefore(milliseconds: 3000).description == "2999-18446744073709551615")
        #expect(StreamEntryID.justBefore(milliseconds: 0).description == "0-0")
        #expect(StreamEntryID.justBefore(milliseconds: 3000) < StreamEntryID("3000-0")!)
        #expect(StreamEntryID("2999-5")! < StreamEntryID.justBefore(milliseconds: 3000))
    }
}
