import Dedup
import Foundation
import Synchronization

// Writing the commands: keys, the claim's `SET`, the scripts' calls, with the pieces a consumer's
// calls share encoded once (``CommandPieces``).
extension RedisDedupStore {
    var sharedPieces: CommandPieces { piecesCache.withLock { $0 } }

    /// Keeps what a call encoded anew; a call that found every piece cached writes nothing back.
    func keep(_ pieces: CommandPieces) {
        guard pieces.encodedAnew else { return }
        var pieces = pieces
        pieces.encodedAnew = false
        piecesCache.withLock { [pieces] in $0 = pieces }
    }

    /// The Redis key of a record: `<keyPrefix>:<RecordID.encoded>` as bytes (NUL and all).
    func key(for id: RecordID) -> [UInt8] {
        keyPrefixBytes + Array(id.encoded.utf8)
    }

    /// `EVALSHA <sha> 1 <key>`, with room for the script's other arguments.
    private func scriptCommand(
        _ script: RedisScript,
        key id: RecordID,
        extraBytes: Int,
        extraArguments: Int
    ) -> RedisCommand {
        var command = script.callPrefix
        let key = key(for: id)
        command.reserve(extraBytes: key.count + extraBytes, extraArguments: 1 + extraArguments)
        command.append(key)
        return command
    }

    /// `TIME`, then a claim's `SET` for each request. The requests' fields are passed one by one,
    /// read in place from the borrowed array: passing a whole request copies it (its strings
    /// retained, then released), whether read from the array or through a buffer pointer.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for an invalid owner label, before any
    ///   command is sent.
    func fastClaimCommands(
        _ requests: borrowing [ClaimRequest],
        _ pieces: inout CommandPieces
    ) throws(DedupError) -> [RedisCommand] {
        var commands: [RedisCommand] = []
        commands.reserveCapacity(requests.count + 1)
        commands.append(Self.timeCommand)
        for index in requests.indices {
            try ClaimRequest.validate(brokerTime: requests[index].brokerTime)
        }
        for index in requests.indices {
            let headerStart = try pieces.ownerHeaderStart(claimingAs: requests[index].ownerLabel)
            commands.append(
                fastClaimCommand(
                    requests[index].id,
                    requests[index].ownerToken,
                    headerStart,
                    requests[index].fingerprint,
                    brokerMilliseconds: requests[index].brokerMilliseconds,
                    lease: requests[index].lease,
                    retention: requests[index].retention,
                    &pieces
                )
            )
        }
        return commands
    }

    /// `SET <key> <new in-flight record> NX PX <lease + retention - 1> GET`: the key expires one
    /// millisecond before the record does (see ``RedisScript``). `headerStart` is the owner
    /// header's start for the claim's label (``CommandPieces/ownerHeaderStart(claimingAs:)``); the
    /// broker time and the fingerprint, if any, follow the lease times (``RecordValue``).
    func fastClaimCommand(
        _ id: RecordID,
        _ ownerToken: String,
        _ headerStart: [UInt8],
        _ fingerprint: String?,
        brokerMilliseconds: Int64?,
        lease: Duration,
        retention: Duration,
        _ pieces: inout CommandPieces
    ) -> RedisCommand {
        let (middle, tail) = pieces.claim(lease: lease, retention: retention)
        let brokerField = RecordValue.brokerTimeField(brokerMilliseconds)
        var token = ownerToken
        return token.withUTF8 { token in
            let keyLength = keyLength(id)
            let valueLength =
                RecordValue.ownerHeaderLength(startBytes: headerStart.count, tokenBytes: token.count)
                + middle.count + brokerField.count + RecordValue.fingerprintFieldLength(fingerprint)
            let capacity = Self.setArgument.count + 2 * 24 + keyLength + valueLength + tail.count
            return RedisCommand(count: 7, capacity: capacity) { writer in
                writer.encoded(Self.setArgument, arguments: 1)
                writeKey(id, length: keyLength, to: &writer)
                writer.bulkHeader(valueLength)
                RecordValue.writeOwnerHeader(start: headerStart, UnsafeRawBufferPointer(token), to: &writer)
                writer.raw(middle)
                if !brokerField.isEmpty { writer.raw(brokerField) }
                RecordValue.writeFingerprintField(fingerprint, to: &writer)
                writer.finish()
                writer.encoded(tail, arguments: 4)
            }
        }
    }

    /// `$3\r\nSET\r\n`: a claim's first argument, encoded.
    private static let setArgument: [UInt8] = RedisCommand("SET").body

    /// The exact byte count of a record's key.
    private func keyLength(_ id: RecordID) -> Int {
        let namespace = id.namespace.utf8.count
        return keyPrefixBytes.count + RespWriter.digitCount(namespace) + 1 + namespace + 1 + id.key.utf8.count
    }

    /// The record's key as one argument: `<keyPrefix>:<namespace byte count>:<namespace>:<key>`.
    private func writeKey(_ id: RecordID, length: Int, to writer: inout RespWriter) {
        writer.bulkHeader(length)
        writer.raw(keyPrefixBytes)
        writer.lengthPrefixed(id.namespace)
        writer.raw(UInt8(ascii: ":"))
        writer.raw(id.key)
        writer.finish()
    }

    /// The claim script's call: the new record, then its owner header alone, the lease, the
    /// retention as the record writes it and the fingerprint as the script compares it.
    func scriptClaimCommand(_ request: ClaimRequest, _ headerStart: [UInt8]) -> RedisCommand {
        let lease = request.lease.wholeMilliseconds
        let retention = request.retention.wholeMilliseconds
        var command = scriptCommand(
            RedisScript.claim,
            key: request.id,
            extraBytes: 2 * (request.ownerToken.utf8.count + headerStart.count) + 180 + 2
                * (request.fingerprint?.utf8.count ?? 0),
            extraArguments: 5
        )
        var header = headerStart
        RecordValue.appendLengthPrefixed(request.ownerToken, to: &header)
        header.append(UInt8(ascii: " "))
        command.append {
            $0.append(contentsOf: header)
            RecordValue.appendNewLeaseTimes(leaseMilliseconds: lease, retentionMilliseconds: retention, to: &$0)
            $0.append(contentsOf: RecordValue.brokerTimeField(request.brokerMilliseconds))
            RecordValue.appendFingerprintField(request.fingerprint, to: &$0)
        }
        command.append(header)
        command.append(lease)
        command.append { RecordValue.appendDuration(retention, to: &$0) }
        command.append(RecordValue.encodedFingerprint(request.fingerprint))
        return command
    }

    /// `EVALSHA <sha> 1 <key> <owner header>`: the start of an owner-checked script's call.
    func ownerCommand(_ script: RedisScript, _ lease: Lease, extraBytes: Int, extraArguments: Int) -> RedisCommand {
        var command = scriptCommand(
            script,
            key: lease.id,
            extraBytes: lease.ownerToken.utf8.count + (lease.ownerLabel?.utf8.count ?? 0) + 32 + extraBytes,
            extraArguments: 1 + extraArguments
        )
        command.append { RecordValue.appendOwnerHeader(lease.ownerToken, label: lease.ownerLabel, to: &$0) }
        return command
    }

    /// `EVALSHA <complete> <n> <key>… <retention ms> <retention field>` and, per completion, `<owner
    /// header> <result field> <first claim or "">`, written in one pass. The completions share a
    /// retention. Across slots: `EVALSHA <complete across slots> 0 <n> <key>…` and the rest as
    /// before, routed by the first key's slot (see ``RedisScript/completeAcrossSlots``).
    func completeCommand(
        _ completions: UnsafeBufferPointer<Completion>,
        _ pieces: inout CommandPieces,
        acrossSlots: Bool = false
    ) -> RedisCommand {
        let retention = pieces.retentionArgument(completions[0].retention)
        let prefix = acrossSlots ? Self.completeAcrossSlotsPrefix : Self.completePrefix
        var capacity = prefix.count + 24 + retention.count
        for index in completions.indices {
            capacity += 4 * 24 + keyLength(completions[index].lease.id) + completions[index].lease.ownerToken.utf8.count
            capacity += pieces.ownerHeaderStart(completions[index].lease.ownerLabel).count
            capacity += completions[index].result.map { RecordValue.resultArgumentOverhead + $0.count } ?? 0
        }
        var command = RedisCommand(count: (acrossSlots ? 4 : 3) + 4 * completions.count + 2, capacity: capacity) {
            writer in
            writer.encoded(prefix, arguments: acrossSlots ? 3 : 2)
            writer.bulkHeader(RespWriter.digitCount(completions.count))
            writer.decimal(Int64(completions.count))
            writer.finish()
            for index in completions.indices {
                writeKey(completions[index].lease.id, length: keyLength(completions[index].lease.id), to: &writer)
            }
            writer.encoded(retention, arguments: 2)
            for index in completions.indices {
                Self.writeCompletionArguments(
                    completions[index],
                    headerStart: pieces.ownerHeaderStart(completions[index].lease.ownerLabel),
                    to: &writer
                )
            }
        }
        if acrossSlots { command.routingSlot = ClusterSlot.slot(of: key(for: completions[0].lease.id)) }
        return command
    }

    /// A completion's owner header (from `headerStart`, its start for the lease's label), result
    /// field and first claim (Unix ms in base 36, or empty when the lease does not say, or says a
    /// time the value could not hold: the script reads it then).
    private static func writeCompletionArguments(
        _ completion: Completion,
        headerStart: [UInt8],
        to writer: inout RespWriter
    ) {
        let lease = completion.lease
        var token = lease.ownerToken
        token.withUTF8 { token in
            writer.bulkHeader(RecordValue.ownerHeaderLength(startBytes: headerStart.count, tokenBytes: token.count))
            RecordValue.writeOwnerHeader(start: headerStart, UnsafeRawBufferPointer(token), to: &writer)
            writer.finish()
        }
        RecordValue.writeResultArgument(completion.result, to: &writer)
        let claimed = lease.claimedAt.flatMap { date -> Int64? in
            let milliseconds = date.timeIntervalSince1970 * 1000
            return milliseconds >= 0 && milliseconds <= Double(RecordValue.latestExpiry)
                ? date.millisecondsSince1970 : nil
        }
        RecordValue.writeFirstClaimArgument(claimed, to: &writer)
    }

    /// The completion script's Lua source, for a benchmark that sends our protocol from another
    /// client.
    package static var completionScriptSource: String { RedisScript.complete.source }

    /// `EVALSHA <complete sha>`, encoded (the key count follows).
    private static let completePrefix: [UInt8] = RedisCommand("EVALSHA", RedisScript.complete.sha).body
    /// `EVALSHA <complete across slots sha> 0`, encoded (the key count, as an argument, follows).
    private static let completeAcrossSlotsPrefix: [UInt8] =
        RedisCommand("EVALSHA", RedisScript.completeAcrossSlots.sha, "0").body

    func readCommand(_ key: [UInt8]) -> RedisCommand {
        var command = RedisScript.read.callPrefix
        command.append(key)
        return command
    }

    func renewCommand(_ lease: Lease, for duration: Duration) -> RedisCommand {
        var command = ownerCommand(RedisScript.renew, lease, extraBytes: 20, extraArguments: 1)
        command.append(duration.wholeMilliseconds)
        return command
    }
}
