import Dedup
import DedupRedis
import DedupRedisStreams
import DedupStoreLocator
import Foundation
import Logging

/// Where the stream demo's broker is: `redis-stream://[user:password@]host:port/KEY`, a Redis
/// server and the key of the stream on it (database 0).
struct StreamBrokerLocation: Sendable, CustomStringConvertible {
    /// The scheme of a stream broker location.
    static let scheme = "redis-stream://"

    /// The location as given (with its password, if any: never print it).
    var text: String
    /// The server, as a `redis://` URL.
    var url: String
    /// The stream's key.
    var stream: String

    /// The dead-letter stream's key (the runner's default).
    var deadLetterStream: String { "\(stream):dead" }

    /// Parses `redis-stream://host:port/KEY`.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for another scheme, a missing key or a
    ///   malformed server part; the message never contains the password.
    init(parsing text: String) throws(DedupError) {
        guard text.lowercased().hasPrefix(Self.scheme) else {
            throw DedupError(
                .invalidConfiguration,
                "--broker must be redis-stream://host:port/KEY, not \(URLCredentials.redacting(text).debugDescription)"
            )
        }
        self.text = text
        let rest = text.dropFirst(Self.scheme.count)
        guard let slash = rest.firstIndex(of: "/"), rest.index(after: slash) < rest.endIndex else {
            throw DedupError(
                .invalidConfiguration,
                "--broker names no stream key: expected redis-stream://host:port/KEY"
            )
        }
        url = "redis://" + rest[..<slash]
        stream = String(rest[rest.index(after: slash)...])
        _ = try RedisEndpoint(url: url)
    }

    /// The location with any password replaced: safe to print.
    var description: String {
        "redis-stream://" + URLCredentials.redacting(url).dropFirst("redis://".count) + "/" + stream
    }
}

/// The settings the demo's parent and its worker processes share.
enum StreamDemoSettings {
    /// The field holding the business ID: the dedup key (a producer's retry repeats it).
    static let orderField = "order"
    /// The field marking a poison message, whose handler fails every time.
    static let poisonField = "poison"
    /// The dedup lease: short, so a killed consumer's claim passes quickly.
    static let lease = Duration.milliseconds(400)
    /// How long an entry stays pending before another consumer takes it over; above the lease.
    static let reclaimIdleTime = Duration.seconds(1)
    /// Deliveries before a failing entry goes to the dead-letter stream.
    static let maxDeliveries = 3
    /// The simulated work per entry (after the effect on Redis: a kill there lands in the
    /// at-least-once window).
    static let work = Duration.milliseconds(3)
}

/// The parent's own commands on the broker: publishing, watching the group, moving it.
final class StreamAdmin: Sendable {
    let location: StreamBrokerLocation
    private let connection: RedisConnection
    private let endpoint: RedisEndpoint

    init(location: StreamBrokerLocation, logger: Logger) throws(DedupError) {
        self.location = location
        endpoint = try RedisEndpoint(url: location.url)
        connection = RedisConnection(
            settings: ConnectionSettings(
                endpoint: endpoint,
                connectTimeout: .seconds(2),
                commandTimeout: .seconds(5),
                reconnect: .init(),
                logger: logger
            ),
            index: 0
        )
    }

    func close() async { await connection.close() }

    /// Runs commands pipelined; an error reply is thrown.
    @discardableResult
    func run(_ commands: [RedisCommand]) async throws(DedupError) -> [RedisReply] {
        let replies = try await connection.execute(commands)
        for reply in replies {
            if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        }
        return replies
    }

    @discardableResult
    func run(_ arguments: String...) async throws(DedupError) -> RedisReply {
        try await run([RedisCommand(words: arguments)])[0]
    }

    /// Entries in `key` (0 when it does not exist).
    func length(of key: String) async throws(DedupError) -> Int {
        Int(try await run("EXISTS", key).integerValue ?? 0) == 0 ? 0 : Int(try await run("XLEN", key).integerValue ?? 0)
    }

    /// Whether `key` exists.
    func exists(_ key: String) async throws(DedupError) -> Bool {
        try await run("EXISTS", key).integerValue == 1
    }

    /// Adds entries, pipelined; returns their IDs in order.
    func publish(_ entries: [[(String, String)]]) async throws(DedupError) -> [StreamEntryID] {
        let commands = entries.map { fields in
            RedisCommand(words: ["XADD", location.stream, "*"] + fields.flatMap { [$0.0, $0.1] })
        }
        return try await run(commands).map { reply throws(DedupError) in
            guard let id = reply.stringValue.flatMap(StreamEntryID.init) else {
                throw DedupError(.storeError, "XADD answered \(reply) instead of an entry ID")
            }
            return id
        }
    }

    /// The group's progress: entries pending (delivered, not acked), whether entries remain
    /// undelivered, and which consumers hold pending entries.
    struct GroupState: Sendable {
        var pending: Int
        var undelivered: Bool
        var holders: [String]
        var isDrained: Bool { pending == 0 && !undelivered }
    }

    func groupState(_ group: String) async throws(DedupError) -> GroupState {
        let replies = try await run([
            RedisCommand("XINFO", "GROUPS", location.stream), RedisCommand("XINFO", "STREAM", location.stream),
            RedisCommand("XPENDING", location.stream, group),
        ])
        let groups = (replies[0].arrayValue ?? []).map(Self.fields)
        guard let info = groups.first(where: { $0["name"]?.stringValue == group }) else {
            throw DedupError(.storeError, "the group \(group) is missing from \(location.stream)")
        }
        let lastDelivered = info["last-delivered-id"]?.stringValue.flatMap(StreamEntryID.init) ?? .zero
        let lastEntry = Self.fields(replies[1])["last-generated-id"]?.stringValue.flatMap(StreamEntryID.init) ?? .zero
        let holders = (replies[2].arrayValue?.last?.arrayValue ?? []).compactMap { $0.arrayValue?.first?.stringValue }
        return GroupState(
            pending: Int(info["pending"]?.integerValue ?? 0),
            undelivered: lastDelivered < lastEntry,
            holders: holders
        )
    }

    /// The entries of `key`, each as its fields.
    func entries(of key: String) async throws(DedupError) -> [[String: String]] {
        let reply = try await run("XRANGE", key, "-", "+")
        return (reply.arrayValue ?? []).map { element in
            let values = element.arrayValue?.last?.arrayValue ?? []
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: values.count - 1, by: 2) {
                fields[values[index].stringValue ?? ""] = values[index + 1].stringValue ?? ""
            }
            return fields
        }
    }

    /// `[name, value, …]` as a dictionary.
    private static func fields(_ reply: RedisReply) -> [String: RedisReply] {
        let items = reply.arrayValue ?? []
        var fields: [String: RedisReply] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let name = items[index].stringValue { fields[name] = items[index + 1] }
        }
        return fields
    }
}

extension RedisCommand {
    /// A command from a list of words.
    init(words: [String]) {
        self.init()
        for word in words { append(word) }
    }
}

extension StoreLocation {
    /// The `--store` spelling of the location, password included: for a child process's arguments.
    var spelling: String {
        switch self {
        case .sqlite(let path): return "sqlite:\(path)"
        case .redis(let url), .postgres(let url): return url
        }
    }
}
