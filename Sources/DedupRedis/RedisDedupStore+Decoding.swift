import Dedup
import Foundation

// Decoding the replies of the claim, completion, renewal and read commands, and the errors they
// turn into.
extension RedisDedupStore {
    /// The answer of the claim's `SET … NX GET`; `nil` when the key is in flight (or its completed
    /// value is past its expiry) and the claim script must decide.
    func decodeFastClaim(
        _ reply: RedisReply,
        _ id: RecordID,
        _ ownerToken: String,
        _ ownerLabel: String,
        _ fingerprint: String?,
        lease: Duration,
        now: Int64,
        pieces: inout CommandPieces
    ) throws -> ClaimAnswer? {
        switch reply {
        case .null:
            return .acquired(
                Lease(
                    id: id,
                    ownerToken: ownerToken,
                    fencingToken: 1,
                    attempt: 1,
                    leaseUntil: Date(millisecondsSince1970: now &+ pieces.milliseconds(lease)),
                    isTakeover: false,
                    claimedAt: Date(millisecondsSince1970: now),
                    ownerLabel: ownerLabel
                )
            )
        case .string(let value):
            if RecordValue.isInFlight(value) { return nil }
            let record = try completedRecord(value, id: id)
            // A key can outlive its record (its expiry moved later behind the store's back): past
            // its expiry the record is gone, and the claim script takes the key.
            if record.expiresAt.millisecondsSince1970 <= now { return nil }
            return Self.answer(finding: record, fingerprint: fingerprint)
        case .error(let text):
            if text.hasPrefix("ERR syntax error") {
                throw DedupError(
                    .storeError,
                    "Redis at \(endpoint.redactedDescription) refused SET … NX GET: the dedup store needs Redis 7.0 or later (\(text))",
                    redisErrorText: text
                )
            }
            throw DedupError.fromServer(text, endpoint: endpoint)
        default:
            throw unexpected(reply, doing: "claim")
        }
    }

    /// The claim script's answer: created, taken over, completed or in flight.
    func decodeScriptClaim(_ reply: RedisReply, request: ClaimRequest) throws -> ClaimAnswer {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, let code = fields.first?.integerValue else {
            throw unexpected(reply, doing: "claim")
        }
        switch (code, fields.count) {
        case (0, 3), (1, 5):
            let isTakeover = code == 1
            guard let leaseUntil = fields[fields.count - 2].integerValue,
                let created = fields[fields.count - 1].integerValue,
                let fencing = isTakeover ? fields[1].integerValue : 1,
                let attempt = isTakeover ? fields[2].integerValue : 1
            else { throw unexpected(reply, doing: "claim") }
            return .acquired(
                Lease(
                    id: request.id,
                    ownerToken: request.ownerToken,
                    fencingToken: fencing,
                    attempt: Int(attempt),
                    leaseUntil: Date(millisecondsSince1970: leaseUntil),
                    isTakeover: isTakeover,
                    claimedAt: Date(millisecondsSince1970: created),
                    ownerLabel: request.ownerLabel
                )
            )
        case (2, 2):
            guard let value = fields[1].bytesValue else { throw unexpected(reply, doing: "claim") }
            return Self.answer(finding: try completedRecord(value, id: request.id), fingerprint: request.fingerprint)
        case (3, 3):
            guard let value = fields[1].bytesValue, let expires = fields[2].integerValue,
                let record = RecordValue.decode(value, id: request.id, expiresMilliseconds: expires)
            else { throw corrupt(request.id) }
            return Self.differ(request.fingerprint, record.fingerprint) ? .payloadMismatch(record) : .inFlight(record)
        default:
            throw unexpected(reply, doing: "claim")
        }
    }

    /// The completed record a claim found.
    private func completedRecord(_ value: [UInt8], id: RecordID) throws -> DedupRecord {
        guard RecordValue.isCompleted(value), let record = RecordValue.decode(value, id: id, expiresMilliseconds: nil)
        else {
            throw corrupt(id)
        }
        return record
    }

    /// A completed record found by a claim: a duplicate, or a payload mismatch when both sides
    /// carry a fingerprint and they differ.
    private static func answer(finding record: DedupRecord, fingerprint: String?) -> ClaimAnswer {
        differ(fingerprint, record.fingerprint) ? .payloadMismatch(record) : .duplicate(record)
    }

    private static func differ(_ requested: String?, _ stored: String?) -> Bool {
        guard let requested, let stored else { return false }
        return !requested.utf8.elementsEqual(stored.utf8)
    }

    /// A record from the read script's reply ({value, PEXPIRETIME}); `nil` for no key. A value that
    /// is not a dedup record throws ``/Dedup/DedupError/Code/corruptStore`` when `strict`, and is skipped
    /// otherwise (listing goes on past someone else's string).
    func decodeRead(_ reply: RedisReply, id: RecordID, strict: Bool) throws -> DedupRecord? {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, fields.count == 2, let expiryTime = fields[1].integerValue else {
            throw unexpected(reply, doing: "read")
        }
        guard let value = fields[0].bytesValue else { return nil }
        // A completed value dates itself; an in-flight one needs the key's expiry.
        let expires = expiryTime >= 0 && expiryTime < RecordValue.latestExpiry ? expiryTime + 1 : nil
        if let record = RecordValue.decode(value, id: id, expiresMilliseconds: expires) {
            return record
        }
        if strict { throw corrupt(id) }
        logger.debug("Skipping a value that is not a dedup record", metadata: ["record": "\(id)"])
        return nil
    }

    private func corrupt(_ id: RecordID) -> DedupError {
        DedupError(
            .corruptStore,
            "Redis at \(endpoint.redactedDescription): the value at the key of \(id) is not a dedup record"
        )
    }

    func decodeFlag(_ reply: RedisReply) throws -> Bool {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        switch reply.integerValue {
        case 1: return true
        case 0: return false
        default: throw unexpected(reply, doing: "a dedup script")
        }
    }

    func serverTime(_ reply: RedisReply) throws -> Int64 {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let parts = reply.arrayValue, parts.count == 2, let seconds = parts[0].integerValue,
            let micros = parts[1].integerValue
        else {
            throw unexpected(reply, doing: "TIME")
        }
        return seconds * 1000 + micros / 1000
    }

    func leaseLost(_ lease: Lease, doing: String) -> DedupError {
        DedupError(
            .leaseLost,
            "cannot \(doing) \(lease.id): the lease (fencing token \(lease.fencingToken)) is no longer current (taken over, released, completed or expired)"
        )
    }

    func unexpected(_ reply: RedisReply, doing: String) -> DedupError {
        DedupError(
            .storeError,
            "Redis at \(endpoint.redactedDescription) gave an unexpected reply to \(doing): \(reply)"
        )
    }

    /// The completion script's answers for `count` keys, appended in order; throws the first
    /// error among them (after reading them all).
    func decodeCompletions(_ reply: RedisReply, count: Int, into answers: inout [CompletionAnswer]) throws {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let flags = reply.arrayValue, flags.count == count else {
            throw unexpected(reply, doing: "the complete script")
        }
        var failure: (any Error)?
        for flag in flags {
            do {
                answers.append(try decodeFlag(flag) ? .completed : .leaseLost)
            } catch {
                failure = failure ?? error
                answers.append(.leaseLost)
            }
        }
        if let failure { throw failure }
    }

    func decodeRenewal(_ reply: RedisReply, _ lease: Lease) throws -> RenewalAnswer {
        if case .integer(0) = reply { return .leaseLost }
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, fields.count == 2, let leaseUntil = fields[1].integerValue else {
            throw unexpected(reply, doing: "renew")
        }
        var renewed = lease
        renewed.leaseUntil = Date(millisecondsSince1970: leaseUntil)
        return .renewed(renewed)
    }
}
