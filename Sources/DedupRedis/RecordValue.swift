import Dedup
import Foundation

/// How a record is stored: one short Redis string per record, whose first word, read with
/// `redis-cli GET`, is its state (`dedup-inspect show` tells the rest).
///
/// ```
/// in_flight <n>:<label> <n>:<token> <lease span> <retention>[ b<broker time>][ f<fencing>][ a<attempt>][ p<n>:<fingerprint>]
/// done <first claim> <took> <kept>[ b<wait>][ f<fencing>][ a<attempt>][ p<n>:<fingerprint>][ r<n>:<result>]
/// ```
///
/// For example `in_flight 15:web-7.prod:4711 32:<token> 30s 1d bmwtesoa0` and `done mwtesoc2 41 1d
/// b12`. Points in time (`<broker time>`, `<first claim>`) are Unix milliseconds in base 36 (digits
/// `0-9a-z`; eight of them until 2059); durations are milliseconds in decimal, or a whole number
/// of seconds, minutes, hours or days written with `s`, `m`, `h` or `d` (`30s`, `1d`); `<took>` and
/// `<wait>` are signed decimal milliseconds. Binary fields (`<label>`, `<token>`, `<fingerprint>`,
/// `<result>`) are `<byte count>:<bytes>`. The fields in brackets are present only when they say
/// something: `b` when the claim that created the record gave a broker time
/// (``/Dedup/DedupRecord/brokerTime``), `f` when the fencing token is not 1, `a` when the attempt is not
/// the fencing token (every acquisition raises both), `p` and `r` when there is a fingerprint or a
/// result; each at most once, in this order.
///
/// An in-flight record's times hang off its expiry, the key's `PEXPIRETIME` + 1 (server clock): its
/// lease ends `<retention>` before it and the key was first claimed `<lease span>` before that, so
/// a claim can write the record with a plain `SET`, which knows no server time. A completed record
/// dates itself, so a claim's `GET` alone answers a duplicate: it was first claimed at `<first
/// claim>` (as the completing lease reported it), completed `<took>` later, and expires `<kept>`
/// (its retention) after that, as its key does (`PEXPIRETIME` + 1, see `RedisScript.complete`);
/// its broker time is `<wait>` before its first claim.
///
/// The owner header, `in_flight <n>:<label> <n>:<token> ` (label `-` for a lease that carries
/// none; a claim always writes one), is what the owner-checked scripts compare byte for byte and
/// what a completion drops, so a completed record keeps no label or token.
///
/// Values written before this layout (``LegacyRecordValue``: `in_flight label=… owner=…` and
/// `completed …`) are read as well, by this type and by the scripts; every rewrite of one (a
/// takeover, a renewal, the completion) writes this layout.
enum RecordValue {
    /// `in_flight <n>:<label> `, or `in_flight - ` for a lease that carries no label: the owner
    /// header up to the token. Stores keep it per label (see `CommandPieces`).
    static func ownerHeaderStart(label: String?) -> [UInt8] {
        var bytes = Array("in_flight ".utf8)
        if let label { appendLengthPrefixed(label, to: &bytes) } else { bytes.append(UInt8(ascii: "-")) }
        bytes.append(UInt8(ascii: " "))
        return bytes
    }

    /// `in_flight <n>:<label> <n>:<token> `: the start of every in-flight value of this holder,
    /// which the owner-checked scripts compare byte for byte.
    static func appendOwnerHeader(_ ownerToken: String, label: String?, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: ownerHeaderStart(label: label))
        appendLengthPrefixed(ownerToken, to: &bytes)
        bytes.append(UInt8(ascii: " "))
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

    /// The part of a new in-flight value right after the owner header: `<lease span> <retention>`
    /// (the span of a first claim is its lease).
    static func appendNewLeaseTimes(leaseMilliseconds: Int64, retentionMilliseconds: Int64, to bytes: inout [UInt8]) {
        appendDuration(leaseMilliseconds, to: &bytes)
        bytes.append(UInt8(ascii: " "))
        appendDuration(retentionMilliseconds, to: &bytes)
    }

    /// ` b<base 36 ms>` for a broker time, after the lease times; empty for none.
    static func brokerTimeField(_ milliseconds: Int64?) -> [UInt8] {
        guard let milliseconds else { return [] }
        var bytes = Array(" b".utf8)
        appendBase36(milliseconds, to: &bytes)
        return bytes
    }

    /// ` p<n>:<fingerprint>`, the last field of a new in-flight value; nothing for none.
    static func appendFingerprintField(_ fingerprint: String?, to bytes: inout [UInt8]) {
        guard let fingerprint else { return }
        bytes.append(contentsOf: " p".utf8)
        appendLengthPrefixed(fingerprint, to: &bytes)
    }

    /// The byte count of ``appendFingerprintField(_:to:)``'s field.
    static func fingerprintFieldLength(_ fingerprint: String?) -> Int {
        fingerprint.map { 2 + RespWriter.digitCount($0.utf8.count) + 1 + $0.utf8.count } ?? 0
    }

    /// ``appendFingerprintField(_:to:)`` into an argument of a command written in one pass.
    static func writeFingerprintField(_ fingerprint: String?, to writer: inout RespWriter) {
        guard let fingerprint else { return }
        writer.raw(UInt8(ascii: " "))
        writer.raw(UInt8(ascii: "p"))
        writer.lengthPrefixed(fingerprint)
    }

    /// The completion's result field as an argument of the completion script: ` r<n>:<bytes>`, or
    /// empty for none.
    static func writeResultArgument(_ result: Data?, to writer: inout RespWriter) {
        guard let result else {
            writer.bulkHeader(0)
            writer.finish()
            return
        }
        writer.bulkHeader(2 + RespWriter.digitCount(result.count) + 1 + result.count)
        writer.raw(UInt8(ascii: " "))
        writer.raw(UInt8(ascii: "r"))
        result.withUnsafeBytes { writer.lengthPrefixed($0) }
        writer.finish()
    }

    /// Most bytes ``writeResultArgument(_:to:)`` writes beyond the result's own (framing included).
    static let resultArgumentOverhead = 24 + 2 + 20 + 1

    /// The first claim's time (Unix ms) in base 36 as an argument, or empty when unknown.
    static func writeFirstClaimArgument(_ milliseconds: Int64?, to writer: inout RespWriter) {
        guard let milliseconds else {
            writer.bulkHeader(0)
            writer.finish()
            return
        }
        let digits = base36Digits(milliseconds)
        writer.bulkHeader(digits.count)
        digits.write(to: &writer)
        writer.finish()
    }

    /// The retention as the completion script takes it: milliseconds, then the `<kept>` field.
    static func appendRetentionArguments(_ milliseconds: Int64, to command: inout RedisCommand) {
        command.append(milliseconds)
        var kept: [UInt8] = []
        appendDuration(milliseconds, to: &kept)
        command.append(kept)
    }

    /// A duration field: whole days, hours, minutes or seconds with their unit, else milliseconds.
    static func appendDuration(_ milliseconds: Int64, to bytes: inout [UInt8]) {
        for (unit, length) in durationUnits where milliseconds > 0 && milliseconds % length == 0 {
            DedupRedis.appendDecimal(milliseconds / length, to: &bytes)
            bytes.append(unit)
            return
        }
        DedupRedis.appendDecimal(milliseconds, to: &bytes)
    }

    /// The units a duration field may carry, longest first, and their milliseconds.
    static let durationUnits: [(UInt8, Int64)] = [
        (UInt8(ascii: "d"), 86_400_000), (UInt8(ascii: "h"), 3_600_000), (UInt8(ascii: "m"), 60_000),
        (UInt8(ascii: "s"), 1_000),
    ]

    static func appendBase36(_ value: Int64, to bytes: inout [UInt8]) {
        let digits = base36Digits(value)
        withUnsafeBytes(of: digits.bytes) { bytes.append(contentsOf: $0.suffix(digits.count)) }
    }

    /// The base 36 digits of a non-negative value, right-aligned in 16 bytes (13 digits hold any
    /// `Int64`).
    static func base36Digits(_ value: Int64) -> Base36Digits {
        var rest = UInt64(clamping: value)
        var digits = Base36Digits()
        withUnsafeMutableBytes(of: &digits.bytes) { buffer in
            var index = buffer.count
            repeat {
                index -= 1
                let digit = UInt8(truncatingIfNeeded: rest % 36)
                buffer[index] = digit < 10 ? UInt8(ascii: "0") &+ digit : UInt8(ascii: "a") &+ digit &- 10
                rest /= 36
            } while rest > 0
            digits.count = buffer.count - index
        }
        return digits
    }

    struct Base36Digits {
        var bytes: (UInt64, UInt64) = (0, 0)
        var count = 0

        func write(to writer: inout RespWriter) {
            withUnsafeBytes(of: bytes) { writer.raw(UnsafeRawBufferPointer(rebasing: $0.suffix(count))) }
        }
    }

    static func appendLengthPrefixed(_ value: String, to bytes: inout [UInt8]) {
        var value = value
        value.withUTF8 {
            DedupRedis.appendDecimal(Int64($0.count), to: &bytes)
            bytes.append(UInt8(ascii: ":"))
            bytes.append(contentsOf: $0)
        }
    }

    /// The fingerprint as the claim script compares it with a stored one (`-` or `<n>:<bytes>`).
    static func encodedFingerprint(_ fingerprint: String?) -> [UInt8] {
        guard let fingerprint else { return [UInt8(ascii: "-")] }
        var bytes: [UInt8] = []
        appendLengthPrefixed(fingerprint, to: &bytes)
        return bytes
    }

    /// Whether a value is an in-flight record's (in either layout).
    static func isInFlight(_ value: [UInt8]) -> Bool { hasPrefix(value, "in_flight ") }

    /// Whether a value is a completed record's (in either layout).
    static func isCompleted(_ value: [UInt8]) -> Bool { hasPrefix(value, "done ") || hasPrefix(value, "completed ") }

    /// `value.starts(with:)` without the generic sequence comparison (once per key read).
    private static func hasPrefix(_ value: [UInt8], _ prefix: StaticString) -> Bool {
        value.withUnsafeBufferPointer { Reader($0).startsWith(prefix) }
    }

    /// Expiries beyond this (milliseconds; the year 5138) are not ours: the scripts never set one,
    /// and Lua, which computes in doubles, could not compute with it exactly.
    static let latestExpiry: Int64 = 100_000_000_000_000

    /// The record a value holds, in either layout; `expiresMilliseconds` (the key's `PEXPIRETIME` +
    /// 1) is needed for an in-flight value and ignored for a completed one. `nil` when the value is
    /// not a record.
    static func decode(_ value: [UInt8], id: RecordID, expiresMilliseconds: Int64?) -> DedupRecord? {
        value.withUnsafeBufferPointer { bytes in
            var reader = Reader(bytes)
            if reader.skip("in_flight ") {
                guard let expires = expiresMilliseconds, (0...latestExpiry).contains(expires) else { return nil }
                if reader.startsWith("label=") || reader.startsWith("owner=") {
                    return LegacyRecordValue.decodeInFlight(&reader, id: id, expiresMilliseconds: expires)
                }
                return decodeInFlight(&reader, id: id, expiresMilliseconds: expires)
            }
            if reader.skip("done ") { return decodeCompleted(&reader, id: id) }
            if reader.skip("completed ") { return LegacyRecordValue.decodeCompleted(&reader, id: id) }
            return nil
        }
    }

    /// `<n>:<label> <n>:<token> <lease span> <retention>` and the optional fields, after `in_flight `.
    private static func decodeInFlight(
        _ reader: inout Reader,
        id: RecordID,
        expiresMilliseconds expires: Int64
    ) -> DedupRecord? {
        var label: UnsafeBufferPointer<UInt8>?
        if !reader.skip("-") {
            guard let labelBytes = reader.lengthPrefixed() else { return nil }
            label = labelBytes
        }
        guard reader.skip(" "), let owner = reader.lengthPrefixed(), reader.skip(" "), let span = reader.duration(),
            reader.skip(" "),
            let retention = reader.duration(), let fields = reader.optionalFields(), fields.result == nil,
            reader.isAtEnd
        else { return nil }
        let leaseUntil = expires - retention
        return DedupRecord(
            id: id,
            state: .inFlight,
            ownerToken: String(decoding: owner, as: UTF8.self),
            fencingToken: fields.fencing,
            attempt: Int(fields.attempt),
            createdMilliseconds: leaseUntil - span,
            leaseUntilMilliseconds: leaseUntil,
            completedMilliseconds: nil,
            expiresMilliseconds: expires,
            fingerprint: fields.fingerprint.map { String(decoding: $0, as: UTF8.self) },
            result: nil,
            ownerLabel: label.map { String(decoding: $0, as: UTF8.self) },
            brokerMilliseconds: fields.broker
        )
    }

    /// `<first claim> <took> <kept>` and the optional fields, after `done `.
    private static func decodeCompleted(_ reader: inout Reader, id: RecordID) -> DedupRecord? {
        guard let created = reader.base36(), reader.skip(" "), let took = reader.signedInteger(), reader.skip(" "),
            let kept = reader.duration(), let fields = reader.optionalFields(brokerAsWait: true), reader.isAtEnd
        else { return nil }
        let completed = created &+ took
        return DedupRecord(
            id: id,
            state: .completed,
            ownerToken: nil,
            fencingToken: fields.fencing,
            attempt: Int(fields.attempt),
            createdMilliseconds: created,
            leaseUntilMilliseconds: nil,
            completedMilliseconds: completed,
            expiresMilliseconds: completed &+ kept,
            fingerprint: fields.fingerprint.map { String(decoding: $0, as: UTF8.self) },
            result: fields.result.map { Data(buffer: $0) },
            ownerLabel: nil,
            brokerMilliseconds: fields.broker.map { created &- $0 }
        )
    }

    /// A cursor over a value's bytes.
    struct Reader {
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

        /// One to 18 ASCII digits (no sign: 18 digits cannot overflow).
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

        /// ``integer()`` with an optional `-` in front.
        mutating func signedInteger() -> Int64? {
            let negative = skip("-")
            return integer().map { negative ? -$0 : $0 }
        }

        /// One to 12 base 36 digits, `0-9a-z` (12 cannot overflow).
        mutating func base36() -> Int64? {
            var value: Int64 = 0
            let start = position
            while position < bytes.count, position - start < 12 {
                let byte = bytes[position]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "z"): digit = byte - UInt8(ascii: "a") + 10
                default: return position > start ? value : nil
                }
                value = value &* 36 &+ Int64(digit)
                position += 1
            }
            return position > start ? value : nil
        }

        /// Decimal milliseconds, or whole units with their letter (`30s`, `1d`).
        mutating func duration() -> Int64? {
            guard let count = integer() else { return nil }
            if position < bytes.count, let unit = RecordValue.durationUnits.first(where: { $0.0 == bytes[position] }) {
                position += 1
                return count &* unit.1
            }
            return count
        }

        mutating func lengthPrefixed() -> UnsafeBufferPointer<UInt8>? {
            guard let count = integer(), skip(":"), count <= bytes.count - position else { return nil }
            defer { position += Int(count) }
            return UnsafeBufferPointer(rebasing: bytes[position..<position + Int(count)])
        }

        /// `[ b<time>][ f<fencing>][ a<attempt>][ p<n>:<fingerprint>][ r<n>:<result>]`, each at most
        /// once and in this order; the broker field is a base 36 time, or a signed wait when
        /// `brokerAsWait`. `nil` when malformed.
        mutating func optionalFields(brokerAsWait: Bool = false) -> OptionalFields? {
            var fields = OptionalFields()
            if skip(" b") {
                guard let broker = brokerAsWait ? signedInteger() : base36() else { return nil }
                fields.broker = broker
            }
            if skip(" f") {
                guard let fencing = integer() else { return nil }
                fields.fencing = fencing
            }
            fields.attempt = fields.fencing
            if skip(" a") {
                guard let attempt = integer() else { return nil }
                fields.attempt = attempt
            }
            if skip(" p") {
                guard let fingerprint = lengthPrefixed() else { return nil }
                fields.fingerprint = fingerprint
            }
            if skip(" r") {
                guard let result = lengthPrefixed() else { return nil }
                fields.result = result
            }
            return fields
        }

        /// `-` (none: `.some(nil)`) or `<n>:<bytes>`; `nil` when malformed.
        mutating func optional() -> UnsafeBufferPointer<UInt8>?? {
            if skip("-") { return .some(nil) }
            guard let value = lengthPrefixed() else { return nil }
            return .some(value)
        }
    }

    /// The fields a value carries only when they say something.
    struct OptionalFields {
        var broker: Int64?
        var fencing: Int64 = 1
        var attempt: Int64 = 1
        var fingerprint: UnsafeBufferPointer<UInt8>?
        var result: UnsafeBufferPointer<UInt8>?
    }
}
