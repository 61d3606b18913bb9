import CHiredis

/// One Redis command as binary-safe arguments, kept as they go on the wire: each argument a RESP
/// bulk string (`$<length>\r\n<bytes>\r\n`) in one buffer, so building one costs one allocation and
/// sending it copies the `*<count>` header and the body as they are (into the connection's send
/// buffer, or hiredis's output buffer while connecting), with no formatting step in between
/// (arguments may contain NUL).
package struct RedisCommand: Sendable {
    private(set) var body: [UInt8] = []
    private(set) var count = 0
    /// The hash slot a cluster routes the command by when its keys are not declared as keys (the
    /// completion script across slots takes them as arguments); `nil`: its first key's slot.
    package var routingSlot: Int?

    package init(_ arguments: String...) {
        body.reserveCapacity(64)
        for argument in arguments { append(argument) }
    }

    /// A command written in one pass by `write`, which must add exactly `count` arguments in at
    /// most `capacity` bytes of RESP (allow 24 bytes of framing per argument): the hot-path
    /// commands, built without per-piece array growth.
    init(count: Int, capacity: Int, _ write: (inout RespWriter) -> Void) {
        // Written into scratch space, then copied into an array of the exact size:
        // `Array(unsafeUninitializedCapacity:)` allocates through the standard library's
        // unspecialized path, which looks up the array storage's type metadata on every call.
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { scratch.deallocate() }
        var writer = RespWriter(start: scratch, capacity: capacity)
        write(&writer)
        precondition(writer.arguments == count && writer.count <= capacity, "RESP writer overran its buffer")
        body = Array(UnsafeBufferPointer(start: scratch, count: writer.count))
        self.count = count
    }

    package mutating func append(_ argument: String) {
        var argument = argument
        argument.withUTF8 { append(bytes: $0) }
    }

    package mutating func append(_ argument: [UInt8]) {
        argument.withUnsafeBufferPointer { append(bytes: $0) }
    }

    mutating func append(bytes argument: UnsafeBufferPointer<UInt8>) {
        appendHeader(argument.count)
        body.append(contentsOf: argument)
        appendCRLF()
    }

    /// Appends a decimal integer without making a `String` of it.
    package mutating func append(_ value: Int64) {
        appendHeader((value < 0 ? 1 : 0) + RespWriter.digitCount(Int(clamping: value.magnitude)))
        appendDecimal(value, to: &body)
        appendCRLF()
    }

    /// Appends one argument that `build` writes straight into the command's buffer (a record value
    /// made of several parts, without an intermediate array); its header goes in front afterwards.
    mutating func append(building build: (inout [UInt8]) -> Void) {
        let start = body.count
        build(&body)
        let length = body.count - start
        var header: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &header) { buffer in
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let end = Self.writeHeader(UInt8(ascii: "$"), length, at: base)
            body.insert(contentsOf: UnsafeBufferPointer(start: base, count: end - base), at: start)
        }
        appendCRLF()
        count += 1
    }

    /// Makes sure appending `extra` more bytes of arguments allocates at most once.
    mutating func reserve(extraBytes extra: Int, extraArguments: Int) {
        body.reserveCapacity(body.count + extra + extraArguments * 16)
    }

    private mutating func appendHeader(_ length: Int) {
        body.append(UInt8(ascii: "$"))
        appendDecimal(Int64(length), to: &body)
        appendCRLF()
        count += 1
    }

    private mutating func appendCRLF() {
        body.append(13)
        body.append(10)
    }

    /// Appends the command to a hiredis context's output buffer: the `*<count>` header, then the
    /// arguments as they are (hiredis's own argv formatting grows an sds string piece by piece
    /// with `sdscatfmt`, several times the cost).
    func append(to context: UnsafeMutablePointer<redisContext>) -> Bool {
        var header: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let headerAppended = withUnsafeMutableBytes(of: &header) { buffer -> Bool in
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let end = Self.writeHeader(UInt8(ascii: "*"), count, at: base)
            return base.withMemoryRebound(to: CChar.self, capacity: end - base) {
                redisAppendFormattedCommand(context, $0, end - base) == REDIS_OK
            }
        }
        guard headerAppended else { return false }
        return body.withUnsafeBufferPointer { body in
            guard let base = body.baseAddress, body.count > 0 else { return true }
            return base.withMemoryRebound(to: CChar.self, capacity: body.count) {
                redisAppendFormattedCommand(context, $0, body.count) == REDIS_OK
            }
        }
    }

    /// Appends the command as it goes on the wire (the `*<count>` header, then the arguments) to
    /// `buffer`: the connection sends a round trip's commands from one buffer of its own.
    func write(to buffer: inout [UInt8]) {
        var header: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &header) { scratch in
            let base = scratch.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let end = Self.writeHeader(UInt8(ascii: "*"), count, at: base)
            buffer.append(contentsOf: UnsafeBufferPointer(start: base, count: end - base))
        }
        buffer.append(contentsOf: body)
    }

    /// Writes `<marker><value>\r\n` at `position`; returns the position after it.
    @inline(__always)
    private static func writeHeader(
        _ marker: UInt8,
        _ value: Int,
        at position: UnsafeMutablePointer<UInt8>
    ) -> UnsafeMutablePointer<UInt8> {
        position[0] = marker
        let digitCount = RespWriter.digitCount(value)
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

    /// The command's name (its first argument), for messages.
    var name: String {
        guard count > 0, let lineEnd = body.firstIndex(of: 13),
            let length = Int(String(decoding: body[1..<lineEnd], as: UTF8.self)),
            lineEnd + 2 + length <= body.count
        else { return "" }
        return String(decoding: body[(lineEnd + 2)..<(lineEnd + 2 + length)], as: UTF8.self)
    }
}

/// Writes RESP bulk strings into a buffer sized in advance (see ``RedisCommand/init(count:capacity:_:)``).
struct RespWriter {
    private let start: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private(set) var count = 0
    private(set) var arguments = 0

    init(start: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.start = start
        self.capacity = capacity
    }

    /// The number of decimal digits of a non-negative value.
    static func digitCount(_ value: Int) -> Int {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        return digits
    }

    /// Arguments already encoded as RESP (the body of a ``RedisCommand``).
    mutating func encoded(_ bytes: [UInt8], arguments: Int) {
        bytes.withUnsafeBytes { raw($0) }
        self.arguments += arguments
    }

    /// The header of an argument of `length` bytes, whose bytes follow as ``raw(_:)-(UnsafeRawBufferPointer)``
    /// pieces and which ``finish()`` closes.
    mutating func bulkHeader(_ length: Int) {
        header(length)
    }

    /// Closes an argument begun with ``bulkHeader(_:)``.
    mutating func finish() {
        crlf()
    }

    /// Raw bytes inside an open argument.
    mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        precondition(count + bytes.count <= capacity)
        UnsafeMutableRawPointer(start + count).copyMemory(from: base, byteCount: bytes.count)
        count += bytes.count
    }

    mutating func raw(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw($0) }
    }

    mutating func raw(_ text: String) {
        var text = text
        text.withUTF8 { raw(UnsafeRawBufferPointer($0)) }
    }

    mutating func raw(_ byte: UInt8) {
        precondition(count < capacity)
        start[count] = byte
        count += 1
    }

    /// A decimal integer inside an open argument (or as part of a header).
    mutating func decimal(_ value: Int64) {
        var magnitude = value.magnitude
        let digits = Self.digitCount(Int(clamping: magnitude))
        if value < 0 { raw(UInt8(ascii: "-")) }
        precondition(count + digits <= capacity)
        var index = count + digits - 1
        repeat {
            start[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
            index -= 1
        } while magnitude > 0
        count += digits
    }

    /// `<count>:<bytes>` inside an open argument.
    mutating func lengthPrefixed(_ bytes: UnsafeRawBufferPointer) {
        decimal(Int64(bytes.count))
        raw(UInt8(ascii: ":"))
        raw(bytes)
    }

    mutating func lengthPrefixed(_ text: String) {
        var text = text
        text.withUTF8 { lengthPrefixed(UnsafeRawBufferPointer($0)) }
    }

    private mutating func header(_ length: Int) {
        raw(UInt8(ascii: "$"))
        decimal(Int64(length))
        crlf()
        arguments += 1
    }

    private mutating func crlf() {
        raw(13)
        raw(10)
    }
}

/// Appends `value` in decimal digits (a `-` first when negative) without making a `String` of it.
func appendDecimal(_ value: Int64, to bytes: inout [UInt8]) {
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
        bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start...]))
    }
}

/// A Redis reply, copied out of the connection's ``ReplyBuffer`` by whoever read it (the I/O thread
/// or an inline caller).
package enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case error(String)
    case array([RedisReply])

    package var errorText: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    package var integerValue: Int64? {
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
                negative
                ? times10.subtractingReportingOverflow(Int64(digit)) : times10.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }

    package var bytesValue: [UInt8]? {
        switch self {
        case .string(let bytes): return bytes
        case .status(let text): return Array(text.utf8)
        default: return nil
        }
    }

    package var stringValue: String? { bytesValue.map { String(decoding: $0, as: UTF8.self) } }

    package var arrayValue: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}

/// Where a connection's hiredis reader puts the reply it is reading: one flat buffer, filled by
/// the reader functions in `shim.h` and read back here, instead of a tree of hiredis reply
/// objects (two allocations and two frees per value, then copied again).
///
/// Owned by one connection and used only by whoever uses its context. Not copyable, so it is
/// freed exactly once, when its owner goes; the owner frees any reader given it first.
struct ReplyBuffer: ~Copyable {
    /// The buffer the reader functions see (through the reader's private data); it stays at one
    /// address while its bytes grow.
    private let storage: UnsafeMutablePointer<dedup_reply_buffer>

    /// Storage kept between replies; a larger reply's is freed once it has been read.
    private static let keptCapacity = 1 << 20

    /// An empty buffer; its bytes are allocated by the first reply.
    init() {
        storage = .allocate(capacity: 1)
        storage.initialize(to: dedup_reply_buffer(bytes: nil, count: 0, capacity: 0))
    }

    deinit {
        free(storage.pointee.bytes)
        storage.deallocate()
    }

    /// Makes `reader` build its replies here. Whatever an earlier reader left (a reply abandoned
    /// half-way when its connection failed) is forgotten: it is not this one's.
    func attach(to reader: UnsafeMutablePointer<redisReader>) {
        clear()
        dedup_reader_use_reply_buffer(reader, storage)
    }

    /// Forgets what a reader left here, and storage past what is kept between replies.
    private func clear() {
        storage.pointee.count = 0
        if storage.pointee.capacity > Self.keptCapacity {
            free(storage.pointee.bytes)
            storage.pointee = dedup_reply_buffer(bytes: nil, count: 0, capacity: 0)
        }
    }

    /// The reply the reader completed, then cleared.
    func take() -> RedisReply {
        var offset = 0
        let reply =
            storage.pointee.bytes.map { Self.reply(at: &offset, in: UnsafeRawPointer($0), end: storage.pointee.count) }
            ?? .null
        clear()
        return reply
    }

    /// The value at `offset` (its header, then its bytes or its elements), moving `offset` past it.
    /// Values that would reach past `end` read as nil (the reader functions never write one).
    private static func reply(at offset: inout Int, in base: UnsafeRawPointer, end: Int) -> RedisReply {
        guard offset + dedup_reply_header_size <= end else { return .null }
        let type = Int32(base.load(fromByteOffset: offset, as: UInt8.self))
        let value = base.loadUnaligned(fromByteOffset: offset + 1, as: Int64.self)
        offset += dedup_reply_header_size
        switch type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS, REDIS_REPLY_ERROR:
            guard value >= 0, value <= end - offset else { return .null }
            let length = Int(value)
            let start = base + offset
            offset += length
            switch type {
            case REDIS_REPLY_STRING:
                return .string(
                    Array(UnsafeBufferPointer(start: start.assumingMemoryBound(to: UInt8.self), count: length))
                )
            case REDIS_REPLY_STATUS:
                return .status(String(decoding: UnsafeRawBufferPointer(start: start, count: length), as: UTF8.self))
            default: return .error(String(decoding: UnsafeRawBufferPointer(start: start, count: length), as: UTF8.self))
            }
        case REDIS_REPLY_INTEGER:
            return .integer(value)
        case REDIS_REPLY_ARRAY:
            // Each element takes a header at least.
            guard value >= 0, value <= (end - offset) / dedup_reply_header_size else { return .null }
            var elements: [RedisReply] = []
            elements.reserveCapacity(Int(value))
            for _ in 0..<Int(value) { elements.append(reply(at: &offset, in: base, end: end)) }
            return .array(elements)
        default:
            return .null
        }
    }
}
