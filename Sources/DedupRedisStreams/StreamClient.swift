import Dedup
import DedupRedis
import Logging

/// The group a command named does not exist (`NOGROUP`): the stream was deleted, or the group
/// destroyed, under the consumer.
struct GroupMissing: Error {
    var message: String
}

/// What one read or reclaim returned: entries to process, and IDs still pending whose entries
/// the stream no longer holds (trimmed or deleted while pending).
struct StreamRead: Sendable {
    var entries: [StreamEntry] = []
    var trimmed: [StreamEntryID] = []
}

/// The stream commands of one consumer, on two connections of its own, each owned by a thread:
/// blocking reads (`XREADGROUP … BLOCK`) wait on `reader`, so they never hold one of Swift's
/// cooperative threads nor delay the acks; the short commands go on `commands`, run inline by
/// the caller when that connection is idle.
final class StreamClient: Sendable {
    private let configuration: RedisStreamConsumer.Configuration
    private let endpoint: RedisEndpoint
    private let reader: RedisConnection
    private let commands: RedisConnection

    init(endpoint: RedisEndpoint, configuration: RedisStreamConsumer.Configuration, logger: Logger) {
        self.configuration = configuration
        self.endpoint = endpoint
        let settings = ConnectionSettings(
            endpoint: endpoint,
            connectTimeout: configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout,
            reconnect: configuration.reconnect,
            logger: logger
        )
        var readerSettings = settings
        // A blocking read answers after its BLOCK time at the latest; the socket allows that too.
        readerSettings.commandTimeout = configuration.blockTimeout + configuration.commandTimeout
        self.reader = RedisConnection(settings: readerSettings, index: 0)
        self.commands = RedisConnection(settings: settings, index: 1)
    }

    /// Closes both connections; a blocking read in progress ends first (within its BLOCK time).
    func close() async {
        await commands.close()
        await reader.close()
    }

    // MARK: Commands

    /// Creates the group at `position` (and the stream, if missing); `false` when it existed.
    func createGroup(at position: String) async throws -> Bool {
        let reply = try await execute(
            RedisCommand("XGROUP", "CREATE", configuration.stream, configuration.group, position, "MKSTREAM")
        )
        return reply != nil
    }

    /// This consumer's own pending entries after `cursor` (`XREADGROUP … <id>`), without waiting.
    func readOwnPending(after cursor: StreamEntryID, count: Int) async throws -> StreamRead {
        try parseRead(try await execute(readCommand(from: cursor.description, count: count, block: nil), on: commands))
    }

    /// Entries never delivered to the group (`XREADGROUP … >`), waiting up to `block` for some.
    func readNew(count: Int, block: Duration?) async throws -> StreamRead {
        try parseRead(try await execute(readCommand(from: ">", count: count, block: block), on: reader, inline: false))
    }

    private func readCommand(from position: String, count: Int, block: Duration?) -> RedisCommand {
        var command = RedisCommand("XREADGROUP", "GROUP", configuration.group, configuration.consumerName, "COUNT")
        command.append(Int64(count))
        if let block {
            command.append("BLOCK")
            command.append(max(1, block.milliseconds))
        }
        command.append("STREAMS")
        command.append(configuration.stream)
        command.append(position)
        return command
    }

    /// Takes over entries pending longer than `minimumIdle` for any consumer, scanning on from
    /// `cursor`; returns them, the IDs whose entries are gone, and where the next call goes on
    /// (`0-0` once the pending list was scanned to its end).
    ///
    /// Two steps, so that only a real delivery counts toward ``RedisStreamConsumer/Configuration/maxDeliveries``:
    /// `XAUTOCLAIM … JUSTID` takes the idle IDs over without counting a delivery, then `XCLAIM`
    /// delivers (and counts) those not `inFlightHere`. An entry this process is still running,
    /// idle in Redis only because its handler is slow, is taken over and left alone: counted,
    /// it would reach the dead-letter stream after fewer runs than the limit.
    func reclaim(
        minimumIdle: Duration,
        cursor: StreamEntryID,
        count: Int,
        inFlightHere: (StreamEntryID) -> Bool
    ) async throws -> (StreamRead, next: StreamEntryID) {
        var command = RedisCommand("XAUTOCLAIM", configuration.stream, configuration.group, configuration.consumerName)
        command.append(minimumIdle.milliseconds)
        command.append(cursor.description)
        command.append("COUNT")
        command.append(Int64(count))
        command.append("JUSTID")
        let reply = try await execute(command)
        guard let parts = reply?.arrayValue, parts.count >= 2,
            let next = parts[0].stringValue.flatMap(StreamEntryID.init)
        else {
            throw unexpected("XAUTOCLAIM", reply)
        }
        var read = StreamRead()
        let idle = (parts[1].arrayValue ?? []).compactMap { $0.stringValue.flatMap(StreamEntryID.init) }
        // Redis 7 also names the pending IDs whose entries were deleted (and drops them itself).
        if parts.count >= 3 {
            read.trimmed += (parts[2].arrayValue ?? []).compactMap { $0.stringValue.flatMap(StreamEntryID.init) }
        }
        let toDeliver = idle.filter { !inFlightHere($0) }
        guard !toDeliver.isEmpty else { return (read, next) }
        var claim = RedisCommand("XCLAIM", configuration.stream, configuration.group, configuration.consumerName, "0")
        for id in toDeliver { claim.append(id.description) }
        let claimed = try await execute(claim)
        guard let entries = claimed?.arrayValue else { throw unexpected("XCLAIM", claimed) }
        for element in entries {
            // An entry deleted since the scan comes back as nil (Redis 6) or not at all (Redis 7,
            // which drops it from the pending list).
            guard element.arrayValue != nil else { continue }
            let (id, entry) = try parseEntry(element)
            if let entry { read.entries.append(entry) } else { read.trimmed.append(id) }
        }
        return (read, next)
    }

    /// Acks entries (`XACK`); returns how many were still pending.
    func ack(_ ids: [StreamEntryID]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        var command = RedisCommand("XACK", configuration.stream, configuration.group)
        for id in ids { command.append(id.description) }
        guard let count = try await execute(command)?.integerValue else { throw unexpected("XACK", nil) }
        return Int(count)
    }

    /// How often the group has delivered `id` (the pending list's count); `nil` when it is no
    /// longer pending (acked meanwhile).
    func deliveryCount(of id: StreamEntryID) async throws -> Int? {
        let reply = try await execute(
            RedisCommand("XPENDING", configuration.stream, configuration.group, id.description, id.description, "1")
        )
        guard let rows = reply?.arrayValue else { throw unexpected("XPENDING", reply) }
        guard let row = rows.first?.arrayValue, row.count >= 4, let count = row[3].integerValue else { return nil }
        return Int(count)
    }

    /// Acks `entry` and, only if that ack removed it from the pending list, adds it to the
    /// dead-letter stream, in one script: of consumers racing to dead-letter one entry, exactly
    /// one adds it. Returns whether this call added it.
    func deadLetter(_ entry: StreamEntry, deliveries: Int, lastError: String) async throws -> Bool {
        var command = RedisCommand(
            "EVAL",
            Self.deadLetterScript,
            "2",
            configuration.stream,
            configuration.deadLetterStreamKey
        )
        command.append(configuration.group)
        command.append(entry.id.description)
        for (name, value) in [
            ("dead_letter.original_id", entry.id.description), ("dead_letter.stream", configuration.stream),
            ("dead_letter.group", configuration.group), ("dead_letter.delivery_count", String(deliveries)),
            ("dead_letter.last_error", lastError),
        ] {
            command.append(name)
            command.append(value)
        }
        for field in entry.fields {
            command.append(field.name)
            command.append(field.value)
        }
        guard let added = try await execute(command)?.integerValue else {
            throw unexpected("the dead-letter script", nil)
        }
        return added == 1
    }

    /// XACK decides who dead-letters: it answers 1 to one caller only. Two keys (the stream and
    /// the dead-letter stream): under Redis Cluster give them one hash tag.
    static let deadLetterScript = """
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
          redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
          return 1
        end
        return 0
        """

    /// The group's lag (`XINFO GROUPS`: entries not yet delivered to it); `nil` when Redis cannot
    /// tell (after deletions it may not know).
    func lag() async throws -> Int64? {
        let reply = try await execute(RedisCommand("XINFO", "GROUPS", configuration.stream))
        for group in reply?.arrayValue ?? [] {
            let fields = group.arrayValue ?? []
            var values: [String: RedisReply] = [:]
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                if let name = fields[index].stringValue { values[name] = fields[index + 1] }
            }
            if values["name"]?.stringValue == configuration.group { return values["lag"]?.integerValue }
        }
        return nil
    }

    // MARK: Replies

    /// Runs one command; an error reply is thrown (``GroupMissing`` when the stream or group is gone), except
    /// `BUSYGROUP`, which reads as `nil`.
    private func execute(
        _ command: RedisCommand,
        on connection: RedisConnection? = nil,
        inline: Bool = true
    ) async throws -> RedisReply? {
        let reply = try await (connection ?? commands).execute([command], mayRunInline: inline).first ?? .null
        if let text = reply.errorText {
            if text.hasPrefix("BUSYGROUP") { return nil }
            // The stream was deleted, and its group with it: NOGROUP for group commands, UNBLOCKED
            // for a read blocked when it went (Redis 7), "no such key" for XINFO.
            if text.hasPrefix("NOGROUP") || text.hasPrefix("UNBLOCKED") || text.hasPrefix("ERR no such key") {
                throw GroupMissing(message: text)
            }
            throw DedupError.fromServer(text, endpoint: endpoint)
        }
        return reply
    }

    /// An `XREADGROUP` reply: nil when the wait ended without entries, else one stream's entries.
    func parseRead(_ reply: RedisReply?) throws -> StreamRead {
        var read = StreamRead()
        guard let reply, reply != .null else { return read }
        guard let streams = reply.arrayValue else { throw unexpected("XREADGROUP", reply) }
        for stream in streams {
            guard let parts = stream.arrayValue, parts.count == 2 else { throw unexpected("XREADGROUP", reply) }
            for element in parts[1].arrayValue ?? [] {
                let (id, entry) = try parseEntry(element)
                if let entry { read.entries.append(entry) } else { read.trimmed.append(id) }
            }
        }
        return read
    }

    /// `[id, [name, value, …]]`, or `[id, nil]` for a pending entry the stream no longer holds.
    private func parseEntry(_ element: RedisReply) throws -> (StreamEntryID, StreamEntry?) {
        guard let parts = element.arrayValue, parts.count == 2,
            let id = parts[0].stringValue.flatMap(StreamEntryID.init)
        else {
            throw unexpected("a stream entry", element)
        }
        guard let values = parts[1].arrayValue else { return (id, nil) }
        var fields: [StreamEntry.Field] = []
        fields.reserveCapacity(values.count / 2)
        for index in stride(from: 0, to: values.count - 1, by: 2) {
            fields.append(
                StreamEntry.Field(name: values[index].bytesValue ?? [], value: values[index + 1].bytesValue ?? [])
            )
        }
        return (id, StreamEntry(id: id, fields: fields))
    }

    private func unexpected(_ what: String, _ reply: RedisReply?) -> DedupError {
        DedupError(
            .storeError,
            "Redis at \(endpoint.redactedDescription) answered \(what) unexpectedly: \(String(describing: reply).prefix(200))"
        )
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
