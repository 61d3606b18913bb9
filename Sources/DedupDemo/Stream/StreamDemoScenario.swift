import Dedup
import DedupPostgres
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import DedupStoreLocator
import DedupTestKit
import Foundation
import Logging

/// The stream demo's knobs.
struct StreamDemoOptions: Sendable {
    var broker: StreamBrokerLocation
    var store: StoreLocation
    var messages = 1_000
    /// The share of messages a producer publishes twice.
    var duplicateRate = 0.15
    var poisonMessages = 3
    var consumers = 3
    /// SIGKILLs per pass, each of a process holding unacked entries.
    var killsPerPass = 3
    /// How long both passes may take together.
    var timeLimit = Duration.seconds(120)
    var seed: UInt64 = 2026
    var verbose = false
}

/// What the stream demo saw, and whether every message was applied as promised.
struct StreamDemoReport: Sendable {
    var messages = 0
    var entries = 0
    var producerRetries = 0
    var poisonMessages = 0
    var processesStarted = 0
    var kills = 0
    var appliedFirstPass = 0
    var isTransactional = false
    /// Entries of the dead-letter stream per poison message (and any other message found there).
    var deadLetters: [String: Int] = [:]
    var deadLetterEntries = 0
    var replayFrom = Date(timeIntervalSince1970: 0)
    var replayUntil = Date(timeIntervalSince1970: 0)
    var replay = StreamReplay.Result(resetRecords: 0, groupPosition: .zero)
    /// Messages published in the replay range: each should be applied once more.
    var messagesInReplayRange = 0
    /// Messages applied again during the replay.
    var reappliedByReplay = 0
    /// Messages applied more than promised, each extra application by a process killed after its
    /// effect (the at-least-once window of stores without transactions).
    var reappliedMessages = 0
    var extraApplications = 0
    /// Messages applied other than promised and not explained by a kill, with their count.
    var violations: [(messageID: String, effects: Int)] = []
    var data = DemoDataLocation(description: "", removalCommand: "")

    /// Every poison message is in the dead-letter stream exactly once, and nothing else is.
    var deadLettersHold: Bool {
        deadLetterEntries == poisonMessages && deadLetters.count == poisonMessages
            && deadLetters.values.allSatisfy { $0 == 1 }
    }
    /// The replay applied exactly the messages of its range again.
    var replayHolds: Bool { reappliedByReplay == messagesInReplayRange && replay.resetRecords == messagesInReplayRange }
}

/// Runs the demo on a real Redis stream: publish (with producer retries and poison messages),
/// consume with processes killed at random, replay a range, consume again, count.
enum StreamDemoScenario {
    /// The demo's failure that is not the store's: the stream was not drained in time, a consumer
    /// process failed, the stream key was taken.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func run(
        _ options: StreamDemoOptions,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> StreamDemoReport {
        var logger = Logger(label: "dedup")
        logger.logLevel = options.verbose ? .debug : .warning
        let namespace = DemoScenario.runName(startedAt: SystemDedupClock().nowMilliseconds())
        let group = namespace
        let broker = options.broker
        let admin = try StreamAdmin(location: broker, logger: logger)
        defer { Task { [admin] in await admin.close() } }
        for key in [broker.stream, broker.deadLetterStream] where try await admin.exists(key) {
            throw Failure(
                description: "the key \(key) already exists on \(broker): name another stream key, or remove it"
            )
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dedup-demo-\(namespace)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)

        var report = StreamDemoReport()
        let store: any DedupStore
        let effects: () async throws -> EffectSnapshot
        let storeData: DemoDataLocation
        switch options.store {
        case .sqlite(let path):
            let existedBefore = FileManager.default.fileExists(atPath: path)
            let sqlite = try SQLiteDedupStore(path: path, logger: logger)
            let ledger = try await SQLiteEffectLedger(store: sqlite, run: namespace)
            store = sqlite
            storeData = .sqlite(
                path: path,
                existedBefore: existedBefore,
                namespace: namespace,
                effectsTable: SQLiteEffectLedger.table
            )
            effects = { EffectSnapshot(counts: try await ledger.effectCounts()) }
            report.isTransactional = true
        case .redis(let url):
            let endpoint = try RedisEndpoint(url: url)
            let configuration = RedisDedupStore.Configuration()
            store = try RedisDedupStore(endpoint: endpoint, configuration: configuration, logger: logger)
            storeData = .redis(
                location: options.store,
                endpoint: endpoint,
                keyPrefix: configuration.keyPrefix,
                namespace: namespace
            )
            effects = { try EffectSnapshot(ledgerFolder: folder.path) }
        case .postgres(let url):
            // As on Redis: the workers claim through the store and write their effects to their
            // ledger files (a stream consumer's handler has no transaction of the store's).
            let postgres = try await PostgresDedupStore(url: url, logger: logger)
            store = postgres
            storeData = .postgres(
                location: options.store.description,
                url: try PostgresURL(url),
                schema: postgres.configuration.schema,
                namespace: namespace,
                table: nil
            )
            effects = { try EffectSnapshot(ledgerFolder: folder.path) }
        }
        report.data = try streamData(store: storeData, broker: broker, folder: folder.path)
        defer {
            (store as? SQLiteDedupStore)?.close()
            (store as? PostgresDedupStore)?.close()
        }

        // The group exists before the first entry, so it sees them all.
        try await admin.run("XGROUP", "CREATE", broker.stream, group, "0", "MKSTREAM")
        var random = SplitMix64(seed: options.seed)
        let published = try await publish(options, admin: admin, random: &random)
        report.messages = published.messages
        report.entries = published.entries
        report.producerRetries = published.entries - published.messages
        report.poisonMessages = options.poisonMessages
        progress("published \(published.messages) messages in \(published.entries) entries to \(broker)")

        let fleet = StreamWorkerFleet(logFolder: folder) { name in
            [
                "--broker", broker.text, "--store", options.store.spelling, "--namespace", namespace, "--consumer-name",
                name, "--ledger-folder", folder.path,
            ]
                + (options.verbose ? ["--verbose"] : [])
        }
        let deadline = ContinuousClock.now + options.timeLimit
        let names = (1...options.consumers).map { "consumer-\($0)" }
        defer { fleet.stopAll() }

        try await consume(
            fleet: fleet,
            names: names,
            admin: admin,
            group: group,
            options: options,
            deadline: deadline,
            random: &random
        )
        let afterFirstPass = try await effects()
        report.appliedFirstPass = afterFirstPass.total
        progress("first pass drained: \(afterFirstPass.total) effects, \(fleet.killed.count) consumer processes killed")

        report.replayFrom = published.rangeStart
        report.replayUntil = published.rangeEnd
        report.replay = try await StreamReplay.run(
            store: options.store,
            namespace: namespace,
            broker: broker,
            group: group,
            from: published.rangeStart,
            until: published.rangeEnd
        )
        report.messagesInReplayRange = published.inRange.count
        progress(
            "replaying [\(DemoScenario.isoString(published.rangeStart)), \(DemoScenario.isoString(published.rangeEnd))): "
                + "\(report.replay.resetRecords) records reset, group moved to \(report.replay.groupPosition)"
        )

        try await consume(
            fleet: fleet,
            names: names,
            admin: admin,
            group: group,
            options: options,
            deadline: deadline,
            random: &random
        )
        fleet.stopAll()
        let afterReplay = try await effects()
        report.processesStarted = fleet.started
        report.kills = fleet.killed.count

        for fields in try await admin.entries(of: broker.deadLetterStream) {
            report.deadLetterEntries += 1
            report.deadLetters[fields[StreamDemoSettings.orderField] ?? "?", default: 0] += 1
        }
        let killed = fleet.killed
        for message in published.orders {
            let expectedFirst = message.hasPrefix("poison-") ? 0 : 1
            let expectedReplay = published.inRange.contains(message) ? 1 : 0
            let first = afterFirstPass.applications(of: message, since: nil)
            let replay = afterReplay.applications(of: message, since: afterFirstPass)
            if replay.count > 0 { report.reappliedByReplay += 1 }
            var explained = true
            var extra = 0
            for (applications, expected) in [(first, expectedFirst), (replay, expectedReplay)] {
                guard applications.count != expected else { continue }
                // Without a transaction, a process killed between its effect and its completion
                // leaves the effect, and the takeover applies the message again.
                let earlier = applications.sorted { $0.fencingToken < $1.fencingToken }.dropLast()
                if report.isTransactional || expected == 0
                    || !earlier.allSatisfy({ $0.pid.map(killed.contains) ?? false })
                {
                    explained = false
                }
                extra += applications.count - expected
            }
            if !explained {
                report.violations.append((message, first.count + replay.count))
            } else if extra > 0 {
                report.reappliedMessages += 1
                report.extraApplications += extra
            }
        }
        return report
    }

    /// Publishes in three phases a few milliseconds apart: before the replay range (with the
    /// poison messages), the range itself, and after it; each message's retry stays in its phase.
    private static func publish(
        _ options: StreamDemoOptions,
        admin: StreamAdmin,
        random: inout SplitMix64
    ) async throws -> PublishedMessages {
        let phaseEnds = [options.messages * 2 / 5, options.messages * 7 / 10, options.messages]
        var published = PublishedMessages()
        var number = 0
        var phaseFirstIDs: [StreamEntryID] = []
        var lastID = StreamEntryID.zero
        for (phase, end) in phaseEnds.enumerated() {
            var entries: [[(String, String)]] = []
            var orders: [String] = []
            var retries: [(at: Int, order: String)] = []
            if phase == 0 {
                for index in 1...max(1, options.poisonMessages) where options.poisonMessages > 0 {
                    orders.append("poison-\(index)")
                }
            }
            while number < end {
                orders.append("order-\(number)")
                number += 1
            }
            orders.shuffle(using: &random)
            for order in orders {
                var fields = [(StreamDemoSettings.orderField, order)]
                if order.hasPrefix("poison-") { fields.append((StreamDemoSettings.poisonField, "1")) }
                entries.append(fields)
                // A producer's retry: the same message again a few entries later, under a new ID.
                if !order.hasPrefix("poison-"), Double.random(in: 0..<1, using: &random) < options.duplicateRate {
                    retries.append((entries.count + Int.random(in: 0...3, using: &random), order))
                }
                while let retry = retries.first, retry.at <= entries.count {
                    entries.append([(StreamDemoSettings.orderField, retry.order)])
                    retries.removeFirst()
                }
            }
            entries += retries.map { [(StreamDemoSettings.orderField, $0.order)] }
            // Each phase starts in a later millisecond of the server's clock than the last ended.
            try await Task.sleep(for: .milliseconds(3))
            var ids: [StreamEntryID] = []
            for chunk in stride(from: 0, to: entries.count, by: 500) {
                ids += try await admin.publish(Array(entries[chunk..<min(chunk + 500, entries.count)]))
            }
            guard let first = ids.first, first.milliseconds > lastID.milliseconds else {
                throw Failure(description: "the stream's clock did not move on between two phases of publishing")
            }
            phaseFirstIDs.append(first)
            lastID = ids.last ?? lastID
            published.entries += entries.count
            published.orders += orders
            if phase == 1 { published.inRange = Set(orders) }
        }
        published.messages = published.orders.count
        published.rangeStart = phaseFirstIDs[1].brokerTime
        published.rangeEnd = phaseFirstIDs[2].brokerTime
        return published
    }

    /// Runs the consumer processes until the group has every entry delivered and acked, killing
    /// processes that hold unacked entries now and then (up to the options' kills per pass).
    private static func consume(
        fleet: StreamWorkerFleet,
        names: [String],
        admin: StreamAdmin,
        group: String,
        options: StreamDemoOptions,
        deadline: ContinuousClock.Instant,
        random: inout SplitMix64
    ) async throws {
        try fleet.start(names)
        var kills = 0
        var state = try await admin.groupState(group)
        while !state.isDrained {
            if let failure = fleet.failure { throw Failure(description: failure) }
            guard ContinuousClock.now < deadline else {
                throw Failure(
                    description:
                        "the stream was not drained within \(options.timeLimit) (\(state.pending) entries pending, "
                        + (state.undelivered ? "some not yet delivered" : "all delivered") + ")"
                )
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...250, using: &random)))
            if kills < options.killsPerPass, !state.holders.isEmpty,
                try fleet.killOne(among: state.holders, using: &random) != nil
            {
                kills += 1
            }
            state = try await admin.groupState(group)
        }
        fleet.stopAll()
    }

    /// The run's data: the store's records and effects, the two streams, the process logs.
    private static func streamData(
        store: DemoDataLocation,
        broker: StreamBrokerLocation,
        folder: String
    ) throws -> DemoDataLocation {
        let endpoint = try RedisEndpoint(url: broker.url)
        var connection: [String]
        switch endpoint.transport {
        case .tcp(let host, let port): connection = ["-h", host, "-p", String(port)]
        case .unixSocket(let path): connection = ["-s", path]
        }
        if let user = endpoint.username { connection += ["--user", user] }
        let keys = [broker.stream, broker.deadLetterStream].map(DemoDataLocation.shellQuoted).joined(separator: " ")
        let removeStreams =
            "redis-cli " + connection.map(DemoDataLocation.shellQuoted).joined(separator: " ") + " del \(keys)"
        // The store's note on where its password goes ends its command: moved to the end of the whole.
        var notes: [String] = []
        var storeCommand = store.removalCommand
        for variable in ["PGPASSWORD", "REDISCLI_AUTH"] {
            let note = "   # with the password in \(variable)"
            if storeCommand.contains(note) {
                storeCommand = storeCommand.replacingOccurrences(of: note, with: "")
                notes.append(variable)
            }
        }
        if endpoint.password != nil, !notes.contains("REDISCLI_AUTH") { notes.append("REDISCLI_AUTH") }
        return DemoDataLocation(
            description:
                "\(store.description); streams \(broker.stream) and \(broker.deadLetterStream) on \(broker); consumer logs in \(folder)",
            removalCommand:
                "\(storeCommand) && \(removeStreams) && rm -rf -- \(DemoDataLocation.shellQuoted(folder))"
                + (notes.isEmpty ? "" : "   # with the password in \(notes.joined(separator: " and "))")
        )
    }
}

/// What was published.
private struct PublishedMessages {
    var messages = 0
    var entries = 0
    /// Every message's business ID, poison messages included.
    var orders: [String] = []
    /// The messages published in the replay range.
    var inRange: Set<String> = []
    var rangeStart = Date(timeIntervalSince1970: 0)
    var rangeEnd = Date(timeIntervalSince1970: 0)
}

/// The effects recorded up to one moment: counts per message (SQLite), or each ledger file's
/// lines (Redis, one file per process), from which the applications after an earlier snapshot follow.
struct EffectSnapshot: Sendable {
    struct Application: Sendable {
        var pid: Int32?
        var fencingToken: Int64
    }

    private var files: [String: [(messageID: String, pid: Int32, fencingToken: Int64)]] = [:]
    private var counts: [String: Int] = [:]

    init(counts: [String: Int]) { self.counts = counts }

    init(ledgerFolder: String) throws {
        files = try FileEffectLedger.applications(in: ledgerFolder)
        for lines in files.values { for line in lines { counts[line.messageID, default: 0] += 1 } }
    }

    var total: Int { counts.values.reduce(0, +) }

    /// The applications of `message` recorded after `earlier` (all of them when `nil`).
    func applications(of message: String, since earlier: EffectSnapshot?) -> [Application] {
        guard !files.isEmpty || counts.isEmpty else {
            let count = counts[message, default: 0] - (earlier?.counts[message, default: 0] ?? 0)
            return Array(repeating: Application(pid: nil, fencingToken: 0), count: max(0, count))
        }
        var found: [Application] = []
        for (file, lines) in files {
            for line in lines.dropFirst(earlier?.files[file]?.count ?? 0) where line.messageID == message {
                found.append(Application(pid: line.pid, fencingToken: line.fencingToken))
            }
        }
        return found
    }
}
