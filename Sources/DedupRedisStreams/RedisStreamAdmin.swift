import Dedup
import DedupRedis
import Logging

/// What `XINFO GROUPS` says about one consumer group.
package struct RedisStreamGroupInfo: Sendable, Hashable {
    /// The group's name.
    package var name: String
    /// The last ID delivered to the group: where its next `XREADGROUP … >` continues after.
    package var lastDeliveredID: StreamEntryID
    /// Entries delivered to the group's consumers and not yet acknowledged.
    package var pending: Int64
    /// Entries not yet delivered to the group; `nil` when the server cannot tell (before Redis 7,
    /// or after an `XGROUP SETID` without `ENTRIESREAD`).
    package var lag: Int64?
    /// The group's consumers.
    package var consumers: Int64
}

/// The administrative calls on a stream's consumer groups that `dedup-inspect replay` makes, on a
/// connection of their own: reading a group's position, the stream's first entry, and moving a
/// group (`XGROUP SETID`). Commands that fail because the stream or group is absent answer `nil`
/// rather than throw, so the caller can say which one is missing.
package final class RedisStreamAdmin: Sendable {
    /// The stream.
    package let location: RedisStreamLocation
    private let connection: RedisConnection

    /// Creates the admin for a stream; connects on first use, with the store's default timeouts.
    package init(
        location: RedisStreamLocation,
        configuration: RedisDedupStore.Configuration = .init(),
        logger: Logger? = nil
    ) {
        self.location = location
        let settings = ConnectionSettings(
            endpoint: location.endpoint,
            connectTimeout: configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout,
            reconnect: configuration.reconnect,
            logger: logger ?? Logger.current
        )
        connection = RedisConnection(settings: settings, index: 0)
    }

    deinit { connection.closeSoon() }

    /// Closes the connection.
    package func close() async { await connection.close() }

    /// The stream's consumer groups (`XINFO GROUPS`); `nil` when the stream does not exist.
    ///
    /// - Throws: ``/Dedup/DedupError`` for an unreachable server, refused login, or a key that holds no
    ///   stream (``/Dedup/DedupError/Code/wrongType``).
    package func groups() async throws(DedupError) -> [RedisStreamGroupInfo]? {
        let reply = try await execute(RedisCommand("XINFO", "GROUPS", location.key))
        if reply.errorText?.hasPrefix("ERR no such key") == true { return nil }
        try check(reply)
        guard let groups = reply.arrayValue else { throw unexpected(reply, doing: "XINFO GROUPS") }
        return try groups.map { group throws(DedupError) in
            guard let fields = group.arrayValue, fields.count % 2 == 0 else {
                throw unexpected(group, doing: "XINFO GROUPS")
            }
            var values: [String: RedisReply] = [:]
            for index in stride(from: 0, to: fields.count, by: 2) {
                if let name = fields[index].stringValue { values[name] = fields[index + 1] }
            }
            guard let name = values["name"]?.stringValue,
                let last = values["last-delivered-id"]?.stringValue.flatMap(StreamEntryID.init),
                let pending = values["pending"]?.integerValue, let consumers = values["consumers"]?.integerValue
            else { throw unexpected(group, doing: "XINFO GROUPS") }
            return RedisStreamGroupInfo(
                name: name,
                lastDeliveredID: last,
                pending: pending,
                lag: values["lag"]?.integerValue,
                consumers: consumers
            )
        }
    }

    /// The ID of the stream's first entry (`XRANGE - + COUNT 1`); `nil` when it holds none.
    package func firstEntryID() async throws(DedupError) -> StreamEntryID? {
        let reply = try await execute(RedisCommand("XRANGE", location.key, "-", "+", "COUNT", "1"))
        try check(reply)
        guard let entries = reply.arrayValue else { throw unexpected(reply, doing: "XRANGE") }
        guard let first = entries.first else { return nil }
        guard let id = first.arrayValue?.first?.stringValue.flatMap(StreamEntryID.init) else {
            throw unexpected(reply, doing: "XRANGE")
        }
        return id
    }

    /// Moves `group` to `position` (`XGROUP SETID`): its next `XREADGROUP … >` delivers the
    /// entries after `position`. Returns `false` when the stream or the group does not exist.
    package func setPosition(of group: String, to position: StreamEntryID) async throws(DedupError) -> Bool {
        let reply = try await execute(RedisCommand("XGROUP", "SETID", location.key, group, position.description))
        if let text = reply.errorText, text.hasPrefix("NOGROUP") || text.contains("requires the key to exist") {
            return false
        }
        try check(reply)
        return true
    }

    private func execute(_ command: RedisCommand) async throws(DedupError) -> RedisReply {
        guard let reply = try await connection.execute([command]).first else {
            throw DedupError(.storeError, "Redis at \(location.endpoint.redactedDescription) sent no reply")
        }
        return reply
    }

    /// Throws an error reply; a key of another type gets words of its own (the server's generic
    /// mapping speaks of dedup records).
    private func check(_ reply: RedisReply) throws(DedupError) {
        guard let text = reply.errorText else { return }
        if text.hasPrefix("WRONGTYPE") {
            throw DedupError(
                .wrongType,
                "Redis at \(location.endpoint.redactedDescription): the key \(location.key.debugDescription) holds no stream: \(text)",
                redisErrorText: text
            )
        }
        throw DedupError.fromServer(text, endpoint: location.endpoint)
    }

    private func unexpected(_ reply: RedisReply, doing: String) -> DedupError {
        DedupError(
            .storeError,
            "Redis at \(location.endpoint.redactedDescription) answered \(doing) on \(location.key.debugDescription) unexpectedly: \(reply)"
        )
    }
}
