import Dedup
import Foundation

/// How a record is stored: one Redis string per record, readable with `redis-cli GET`.
///
/// ```
/// in_flight label=<n>:<label> owner=<n>:<token> b=<t> fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp>
/// completed b=<t> fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp> created_ms=<t> completed_ms=<t> kept_ms=<ms> result=<r>
/// ```
///
/// `b=<t> ` is the broker time (Unix ms, ``/Dedup/DedupRecord/brokerTime``), present only when the claim
/// that created the record gave one: the creating claim writes it, and every later rewrite (a
/// takeover, a renewal, the completion) carries it as it is. Values without it (claimed without a
/// broker time, or written before broker times were kept) read with none.
///
/// `<fp>` and `<r>` are `-` (none) or `<byte count>:<bytes>` (binary-safe), the owner label and
/// token always the latter. An in-flight record's times hang off its expiry, the key's
/// `PEXPIRETIME` + 1 (server clock): its lease ends `retention_ms` before it and the key was first
/// claimed `lease_span_ms` before that. A completed record keeps its in-flight fields after the
/// owner header (their times no longer apply) and adds when it was first claimed (`created_ms`, as
/// the completing lease reported it), when it completed and for how long it is kept (its expiry is
/// `completed_ms` + `kept_ms`; the key's `PEXPIRETIME` + 1 is that, see `RedisScript.complete`).
///
/// The owner header, `in_flight label=<n>:<label> owner=<n>:<token> `, is what the owner-checked
/// scripts compare byte for byte and what a completion drops, so a completed record keeps no
/// label. In-flight values written before labels were kept have no `label=` field
/// (`in_flight owner=…`): they read with no label, and a takeover rewrites them with one.
enum RecordValue {
    private static let inFlightField = Array("in_flight ".utf8)
    private static let labelField = Array("label=".utf8)
    private static let ownerField = Array("owner=".utf8)
    private static let firstCounters = Array("fencing=1 attempt=1 lease_span_ms=".utf8)
    private static let retentionField = Array(" retention_ms=".utf8)
    private static let fingerprintField = Array(" fp=".utf8)
    private static let brokerField = Array("b=".utf8)

    /// `b=<ms> ` for a broker time, placed between the owner header and the counters; empty for none.
    static func brokerTimeField(_ milliseconds: Int64?) -> [UInt8] {
        guard let milliseconds else { return [] }
        var bytes = brokerField
        DedupRedis.appendDecimal(milliseconds, to: &bytes)
        bytes.append(UInt8(ascii: " "))
        return bytes
    }

    /// `in_flight label=<n>:<label> owner=`, or `in_flight owner=` for a lease that carries no
    /// label: the owner header up to the token. Stores keep it per label (see `CommandPieces`).
    static func ownerHeaderStart(label: String?) -> [UInt8] {
        var bytes = inFlightField
        if let label {
            bytes.append(contentsOf: labelField)
            appendLengthPrefixed(label, to: &bytes)
            bytes.append(UInt8(ascii: " "))
        }
        bytes.append(contentsOf: ownerField)
        return bytes
    }

    /// `in_flight label=<n>:<label> owner=<n>:<token> `: the start of every in-flight value of this
    /// holder, which the owner-checked scripts compare byte for byte.
    static func appendOwnerHeader(_ ownerToken: String, label: String?, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: ownerHeaderStart(label: label))
        appendLengthPrefixed(ownerToken, to: &bytes)
        bytes.append(UInt8(ascii: " "))
    }

    /// The part of a new in-flight value between the owner header and the fingerprint:
    /// `fencing=1 attempt=1 lease_span_ms=<L> retention_ms=<R> fp=`.
    static func appendNewCounters(leaseMilliseconds: Int64, retentionMilliseconds: Int64, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: firstCounters)
        DedupRedis.appendDecimal(leaseMilliseconds, to: &bytes)
        bytes.append(contentsOf: retentionField)
        DedupRedis.appendDecimal(retentionMilliseconds, to: &bytes)
        bytes.append(contentsOf: fingerprintField)
    }

    /// The byte count of an owner header: its start (``ownerHeaderStart(label:)``) of `startBytes`
    /// bytes and a token of `tokenBytes` bytes.
    static func ownerHeaderLength(startBytes: Int, tokenBytes: Int) -> Int {
        startBytes + RespWriter.digitCount(tokenBytes) + 1 + tokenBytes + 1
    }

    /// ``appendOwnerHeader(_:label:to:)`` into an argument of a command written in one pass, from
    /// the header's start as ``ownerHeaderStart(label:)`` encoded it.
    static func writeOwnerHeader(start: [UInt8], _ token: UnsafeRawBufferPointer, to writer: inout RespWriter) {
        writer.raw(start)
        writer.lengthPrefixed(token)
        writer.raw(UInt8(ascii: " "))
    }

    /// `-` for none, else `<byte count>:<bytes>`.
    static func appendOptional(_ value: String?, to bytes: inout [UInt8]) {
        if let value { appendLengthPrefixed(value, to: &bytes) } else { bytes.append(UInt8(ascii: "-")) }
    }

    static func appendLengthPrefixed(_ value: String, to bytes: inout [UInt8]) {
        var value = value
        value.withUTF8 { appendLengthPrefixed($0, to: &bytes) }
    }

    static func appendLengthPrefixed(_ value: UnsafeRawBufferPointer, to bytes: inout [UInt8]) {
        appendLengthPrefixed(value.bindMemory(to: UInt8.self), to: &bytes)
    }

    static func appendLengthPrefixed(_ value: UnsafeBufferPointer<UInt8>, to bytes: inout [UInt8]) {
        DedupRedis.appendDecimal(Int64(value.count), to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(contentsOf: value)
    }

    /// The fingerprint as the scripts compare it (`-` or `<n>:<bytes>`).
    static func encodedFingerprint(_ fingerprint: String?) -> [UInt8] {
        var bytes: [UInt8] = []
        appendOptional(fingerprint, to: &bytes)
        return bytes
    }

    static func isInFlight(_ value: [UInt8]) -> Bool { hasPrefix(value, "in_flight ") }
    static func isCompleted(_ value: [UInt8]) -> Bool { hasPrefix(value, "completed ") }

    /// `value.starts(with:)` without the generic sequence comparison (once per key read).
    private static func hasPrefix(_ value: [UInt8], _ prefix: StaticString) -> Bool {
        value.withUnsafeBufferPointer { Reader($0).startsWith(prefix) }
    }

    /// The record a value holds; `expiresMilliseconds` (the key's `PEXPIRETIME` + 1) is needed for
    /// an in-flight value and ignored for a completed one. `nil` when the value is not a record.
    static func decode(_ value: [UInt8], id: RecordID, expiresMilliseconds: Int64?) -> DedupRecord? {
        value.withUnsafeBufferPointer { decode($0, id: id, expiresMilliseconds: expiresMilliseconds) }
    }

    /// Expiries beyond this (milliseconds; the year 5138) are not ours: the scripts never set one,
    /// and Lua, which computes in doubles, could not compute with it exactly.
    static let latestExpiry: Int64 = 100_000_000_000_000

    private static func decode(_ value: UnsafeBufferPointer<UInt8>, id: RecordID, expiresMilliseconds: Int64?) -> DedupRecord? {
        var reader = Reader(value)
        if reader.skip("in_flight ") {
            var label: UnsafeBufferPointer<UInt8>?
            if reader.skip("label=") {
                guard let labelBytes = reader.lengthPrefixed(), reader.skip(" ") else { return nil }
                label = labelBytes
            }
            guard let expires = expiresMilliseconds, (0...latestExpiry).contains(expires),
                reader.skip("owner="), let owner = reader.lengthPrefixed(), reader.skip(" "),
                let broker = reader.brokerTime(), let counters = reader.counters(), reader.isAtEnd
            else { return nil }
            let leaseUntil = expires - counters.retention
            return DedupRecord(
                id: id, state: .inFlight, ownerToken: String(decoding: owner, as: UTF8.self), fencingToken: counters.fencing,
                attempt: Int(counters.attempt), createdMilliseconds: leaseUntil - counters.span, leaseUntilMilliseconds: leaseUntil,
                completedMilliseconds: nil, expiresMilliseconds: expires,
                fingerprint: counters.fingerprint.map { String(decoding: $0, as: UTF8.self) }, result: nil,
                ownerLabel: label.map { String(decoding: $0, as: UTF8.self) }, brokerMilliseconds: broker
            )
        }
        guard reader.skip("completed "), let broker = reader.brokerTime(), let counters = reader.counters(),
            reader.skip(" created_ms="), let created = reader.integer(),
            reader.skip(" completed_ms="), let completed = reader.integer(),
            reader.skip(" kept_ms="), let kept = reader.integer(),
            reader.skip(" result="), let result = reader.optional(), reader.isAtEnd
        else { return nil }
        return DedupRecord(
            id: id, state: .completed, ownerToken: nil, fencingToken: counters.fencing, attempt: Int(counters.attempt),
            createdMilliseconds: created, leaseUntilMilliseconds: nil,
            completedMilliseconds: completed, expiresMilliseconds: completed + kept,
            fingerprint: counters.fingerprint.map { String(decoding: $0, as: UTF8.self) }, result: result.map { Data(buffer: $0) },
            ownerLabel: nil, brokerMilliseconds: broker
        )
    }

    /// A cursor over a value's bytes.
    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0

        init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var isAtEnd: Bool { position == bytes.count }

        /// Steps over `literal` if the bytes continue with it.
        mutating func skip(_ literal: StaticString) -> Bool {
            guard startsWith(literal) else { return false }
            position += literal.utf8CodeUnitCount
            return true
        }

        /// Whether the bytes continue with `literal`.
        func startsWith(_ literal: StaticString) -> Bool {
            let length = literal.utf8CodeUnitCount
            guard bytes.count - position >= length, let base = bytes.baseAddress else { return false }
            return memcmp(base + position, literal.utf8Start, length) == 0
        }

        /// One to 18 ASCII digits (no sign: every number stored is non-negative; 18 digits cannot
        /// overflow).
        mutating func integer() -> Int64? {
            var value: Int64 = 0
            let start = position
            while position < bytes.count, position - start < 18 {
                let digit = bytes[position] &- UInt8(ascii: "0")
                guard digit < 10 else { break }
                value = value &* 10 &+ Int64(digit)
                position += 1
            }
            return position > start ? value : nil
        }

        mutating func lengthPrefixed() -> UnsafeBufferPointer<UInt8>? {
            guard let count = integer(), skip(":"), count <= bytes.count - position else { return nil }
            defer { position += Int(count) }
            return UnsafeBufferPointer(rebasing: bytes[position..<position + Int(count)])
        }

        /// The optional `b=<ms> ` field: `.some(nil)` when absent, `nil` when malformed.
        mutating func brokerTime() -> Int64?? {
            guard skip("b=") else { return .some(nil) }
            guard let milliseconds = integer(), skip(" ") else { return nil }
            return .some(milliseconds)
        }

        /// `fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp>`, the fields both
        /// states carry (a completed record keeps its in-flight ones); `nil` when malformed.
        mutating func counters() -> (fencing: Int64, attempt: Int64, span: Int64, retention: Int64, fingerprint: UnsafeBufferPointer<UInt8>?)? {
            guard skip("fencing="), let fencing = integer(), skip(" attempt="), let attempt = integer(),
                skip(" lease_span_ms="), let span = integer(), skip(" retention_ms="), let retention = integer(),
                skip(" fp="), let fingerprint = optional()
            else { return nil }
            return (fencing, attempt, span, retention, fingerprint)
        }

        /// `-` (none: `.some(nil)`) or `<n>:<bytes>`; `nil` when malformed.
        mutating func optional() -> UnsafeBufferPointer<UInt8>?? {
            if skip("-") { return .some(nil) }
            guard let value = lengthPrefixed() else { return nil }
            return .some(value)
        }
    }
}
