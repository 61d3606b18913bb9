import Dedup

/// What a Redis server says about the settings that decide whether dedup records outlive memory
/// pressure and restarts, as read by ``RedisDedupStore/serverSettings()``. A setting the server
/// would not tell (an ACL without `INFO` or `CONFIG`, a renamed `CONFIG`) is `nil`, and
/// ``unreadable`` says why.
public struct RedisServerSettings: Sendable, Hashable {
    /// `redis_version` (`INFO server`).
    public var version: String?
    /// Whether the append-only file is on (`aof_enabled` of `INFO persistence`).
    public var appendOnly: Bool?
    /// `appendfsync`: how often the append-only file is flushed (`CONFIG GET`).
    public var appendFsync: String?
    /// The RDB snapshot rules (`save`, from `CONFIG GET`), as `"3600 1 300 100"`; empty when
    /// snapshots are off.
    public var snapshotRules: String?
    /// `maxmemory_policy` (`INFO memory`, else `CONFIG GET`).
    public var evictionPolicy: String?
    /// `maxmemory` in bytes, 0 for no limit (`INFO memory`, else `CONFIG GET`).
    public var maxMemoryBytes: Int64?
    /// The commands the server refused, each with its answer, e.g. `CONFIG GET save: ERR unknown command`.
    public var unreadable: [String]

    /// Creates settings.
    public init(
        version: String? = nil,
        appendOnly: Bool? = nil,
        appendFsync: String? = nil,
        snapshotRules: String? = nil,
        evictionPolicy: String? = nil,
        maxMemoryBytes: Int64? = nil,
        unreadable: [String] = []
    ) {
        self.version = version
        self.appendOnly = appendOnly
        self.appendFsync = appendFsync
        self.snapshotRules = snapshotRules
        self.evictionPolicy = evictionPolicy
        self.maxMemoryBytes = maxMemoryBytes
        self.unreadable = unreadable
    }

    /// Whether the eviction policy may drop dedup records when memory runs out (`nil`: unknown).
    /// Every record's key has a TTL, so the `volatile-*` policies evict them as readily as the
    /// `allkeys-*` ones; only `noeviction` keeps them, failing writes with `OOM` instead.
    public var evictsRecords: Bool? {
        guard let evictionPolicy else { return nil }
        if evictionPolicy == "noeviction" { return false }
        if evictionPolicy.hasPrefix("allkeys-") || evictionPolicy.hasPrefix("volatile-") { return true }
        return nil
    }

    /// Whether records survive a restart of the server: kept by the append-only file or by RDB
    /// snapshots (those lose what was written since the last one). `nil` when that cannot be told.
    public var survivesRestart: Bool? {
        if appendOnly == true { return true }
        if let snapshotRules, !snapshotRules.isEmpty { return true }
        if appendOnly == false && snapshotRules == "" { return false }
        return nil
    }
}

extension RedisDedupStore {
    /// Reads the server's version, persistence and eviction settings in one round trip: `INFO`,
    /// and `CONFIG GET` of `save`, `appendonly`, `appendfsync`, `maxmemory-policy` and `maxmemory`.
    /// `INFO` is preferred where both say, since managed and hardened servers often refuse `CONFIG`.
    /// A refused command leaves its settings `nil` (see ``RedisServerSettings/unreadable``).
    ///
    /// - Throws: ``/Dedup/DedupError`` when the server cannot be reached or refuses the login.
    public func serverSettings() async throws -> RedisServerSettings {
        Self.serverSettings(from: try await execute(Self.serverSettingsCommands))
    }

    private static let settingsParameters = ["save", "appendonly", "appendfsync", "maxmemory-policy", "maxmemory"]

    /// `INFO`, then `CONFIG GET` of each setting ``serverSettings()`` reads.
    static let serverSettingsCommands =
        [RedisCommand("INFO")] + settingsParameters.map { RedisCommand("CONFIG", "GET", $0) }

    /// The settings the replies of ``serverSettingsCommands`` tell.
    static func serverSettings(from replies: [RedisReply]) -> RedisServerSettings {
        let parameters = settingsParameters
        var settings = RedisServerSettings()
        var info: [Substring: Substring] = [:]
        if let text = replies[0].errorText {
            settings.unreadable.append("INFO: \(text)")
        } else if let text = replies[0].stringValue {
            for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                info[line[..<colon]] = line[line.index(after: colon)...]
            }
        }
        var config: [String: String] = [:]
        for (parameter, reply) in zip(parameters, replies.dropFirst()) {
            if let text = reply.errorText {
                settings.unreadable.append("CONFIG GET \(parameter): \(text)")
            } else if let pair = reply.arrayValue, pair.count == 2, let value = pair[1].stringValue {
                config[parameter] = value
            }
        }
        settings.version = info["redis_version"].map(String.init)
        settings.appendOnly = info["aof_enabled"].map { $0 == "1" } ?? config["appendonly"].map { $0 == "yes" }
        settings.appendFsync = config["appendfsync"]
        settings.snapshotRules = config["save"]
        settings.evictionPolicy = info["maxmemory_policy"].map(String.init) ?? config["maxmemory-policy"]
        settings.maxMemoryBytes = info["maxmemory"].flatMap { Int64($0) } ?? config["maxmemory"].flatMap { Int64($0) }
        return settings
    }
}
