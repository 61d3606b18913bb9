import CHiredis
import Dedup

/// One Redis command as binary-safe arguments: all argument bytes in one buffer plus each length,
/// so building one costs two allocations and the I/O thread passes pointers into it to
/// `redisAppendCommandArgv` (arguments may contain NUL).
struct RedisCommand: Sendable {
    private(set) var bytes: [UInt8] = []
    private(set) var lengths: [Int] = []

    init(_ arguments: String...) {
        bytes.reserveCapacity(128)
        lengths.reserveCapacity(8)
        for argument in arguments { append(argument) }
    }

    mutating func append(_ argument: String) {
        var argument = argument
        argument.withUTF8 { append(bytes: $0) }
    }

    mutating func append(_ argument: [UInt8]) {
        argument.withUnsafeBufferPointer { append(bytes: $0) }
    }

    /// Appends a decimal integer without making a `String` of it.
    mutating func append(_ value: Int64) {
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: 20 digits and a sign fit
        withUnsafeMutableBytes(of: &digits) { buffer in
            var start = buffer.count
            repeat {
                start -= 1
                buffer[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                start -= 1
                buffer[start] = UInt8(ascii: "-")
            }
            let bound = buffer.bindMemory(to: UInt8.self)
            append(bytes: UnsafeBufferPointer(rebasing: bound[start...]))
        }
    }

    /// Appends one argument made of `prefix` followed by `text`'s UTF-8 (a record's key: the
    /// store's prefix and the record identity), without building it separately first.
    mutating func append(_ prefix: [UInt8], _ id: RecordID) {
        bytes.append(contentsOf: prefix)
        let before = bytes.count
        appendDecimal(id.namespace.utf8.count)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(contentsOf: id.namespace.utf8)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(contentsOf: id.key.utf8)
        lengths.append(prefix.count + bytes.count - before)
    }

    private mutating func appendDecimal(_ value: Int) {
        var divisor = 1
        while divisor <= value / 10 { divisor *= 10 }
        var remaining = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining / divisor))
            remaining %= divisor
            divisor /= 10
        }
    }

    /// Makes sure appending `extra` more bytes of arguments allocates at most once.
    mutating func reserve(extraBytes extra: Int, extraArguments: Int) {
        bytes.reserveCapacity(bytes.count + extra)
        lengths.reserveCapacity(lengths.count + extraArguments)
    }

    mutating func append(bytes argument: UnsafeBufferPointer<UInt8>) {
        bytes.append(contentsOf: argument)
        lengths.append(argument.count)
    }

    /// Appends the command to a hiredis context's output buffer, formatted here as RESP in one
    /// buffer (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per argument): hiredis's own argv
    /// formatting grows an sds string piece by piece with `sdscatfmt`, several times the cost.
    func append(to context: UnsafeMutablePointer<redisContext>) -> Bool {
        let count = lengths.count
        // Each header is at most 1 + 20 digits + 2 bytes; each argument adds its CRLF.
        let capacity = 23 + count * 25 + bytes.count
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { out -> Bool in
            guard let base = out.baseAddress else { return false }
            var end = Self.writeHeader(UInt8(ascii: "*"), count, at: base)
            bytes.withUnsafeBufferPointer { argumentBytes in
                var offset = 0
                for index in 0..<count {
                    let length = lengths[index]
                    end = Self.writeHeader(UInt8(ascii: "$"), length, at: end)
                    if length > 0, let source = argumentBytes.baseAddress {
                        end.update(from: source + offset, count: length)
                        end += length
                    }
                    offset += length
                    end[0] = 13
                    end[1] = 10
                    end += 2
                }
            }
            let length = end - base
            return base.withMemoryRebound(to: CChar.self, capacity: length) {
                redisAppendFormattedCommand(context, $0, length) == REDIS_OK
            }
        }
    }

    /// Writes `<marker><value>\r\n` at `position`; returns the position after it.
    @inline(__always)
    private static func writeHeader(_ marker: UInt8, _ value: Int, at position: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8> {
        position[0] = marker
        var digitCount = 1
        var probe = UInt(value) / 10
        while probe > 0 {
            digitCount += 1
            probe /= 10
        }
        var remaining = UInt(value)
        var index = digitCount
        while index > 0 {
            position[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining % 10)
            remaining /= 10
            index -= 1
        }
        position[digitCount + 1] = 13
        position[digitCount + 2] = 10
        return position + digitCount + 3
    }

    /// The command's name, for messages.
    var name: String {
        guard let first = lengths.first else { return "" }
        return String(decoding: bytes[0..<first], as: UTF8.self)
    }
}

/// A Redis reply, copied out of hiredis's reply object on the I/O thread.
enum RedisReply: Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case error(String)
    case array([RedisReply])

    /// Copies a hiredis reply tree.
    init(_ reply: UnsafeMutablePointer<redisReply>) {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            self = .string(Self.bytes(value.str, value.len))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(value.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element[index] {
                    elements.append(RedisReply(element))
                } else {
                    elements.append(.null)
                }
            }
            self = .array(elements)
        default:
            self = .null
        }
    }

    private static func bytes(_ pointer: UnsafeMutablePointer<CChar>?, _ length: Int) -> [UInt8] {
        guard let pointer, length > 0 else { return [] }
        return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    var errorText: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    var integerValue: Int64? {
        switch self {
        case .integer(let value): return value
        case .string(let bytes): return Self.parseInteger(bytes)
        default: return nil
        }
    }

    /// `Int64(String(decoding: bytes, as: UTF8.self))` without making the `String`: an optional
    /// sign, then one or more ASCII digits; `nil` on anything else or overflow.
    private static func parseInteger(_ bytes: [UInt8]) -> Int64? {
        var index = 0
        var negative = false
        if let first = bytes.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            index = 1
        }
        guard index < bytes.count else { return nil }
        var value: Int64 = 0
        while index < bytes.count {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) =
                negative ? times10.subtractingReportingOverflow(Int64(digit)) : times10.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }

    var bytesValue: [UInt8]? {
        switch self {
        case .string(let bytes): return bytes
        case .status(let text): return Array(text.utf8)
        default: return nil
        }
    }

    var stringValue: String? { bytesValue.map { String(decoding: $0, as: UTF8.self) } }

    var arrayValue: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}
