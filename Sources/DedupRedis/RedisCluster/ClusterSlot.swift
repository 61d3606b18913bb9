/// Redis Cluster's hash slots: `CRC16(key) mod 16384`, hashing only the part between the first
/// `{` and the next `}` when that part is not empty (a hash tag), as the cluster specification says.
package enum ClusterSlot {
    /// How many hash slots a cluster has.
    package static let count = 16_384

    /// The slot of a key.
    package static func slot(of key: some Collection<UInt8>) -> Int {
        var bytes = Array(key)
        return bytes.withUnsafeMutableBufferPointer { slot(of: UnsafeBufferPointer($0)) }
    }

    /// The slot of a key in place.
    static func slot(of key: UnsafeBufferPointer<UInt8>) -> Int {
        var hashed = key
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = UnsafeBufferPointer(rebasing: key[(open + 1)..<close])
        }
        return Int(crc16(hashed)) & (count - 1)
    }

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the cluster's key hash.
    static func crc16(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte))]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}

extension RedisCommand {
    /// The hash slot of the command's first key, `nil` for a command without keys (`TIME`, `PING`,
    /// `SCAN`, `INFO`, …). Read from the encoded arguments, so the store's commands need not carry
    /// their keys beside them: the name, then the key (`SET`, `GET`, …) or, for a script call, the
    /// key count and the first key. Every command the store sends with declared
    /// keys takes keys of one slot; one without them (the completion across slots) has a
    /// ``routingSlot``.
    package var clusterSlot: Int? {
        if let routingSlot { return routingSlot }
        return body.withUnsafeBufferPointer { body -> Int? in
            var reader = ArgumentReader(body)
            guard let name = reader.next() else { return nil }
            if Self.isScriptCall(name) {
                _ = reader.next()  // the script or its SHA1
                guard let keyCount = reader.next(), keyCount.count > 0, keyCount.first != UInt8(ascii: "0") else {
                    return nil
                }
            } else if !Self.takesKeyFirst(name) {
                return nil
            }
            return reader.next().map { ClusterSlot.slot(of: $0) }
        }
    }

    private static func isScriptCall(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        equalsIgnoringCase(name, "EVALSHA") || equalsIgnoringCase(name, "EVAL")
            || equalsIgnoringCase(name, "EVALSHA_RO")
            || equalsIgnoringCase(name, "EVAL_RO") || equalsIgnoringCase(name, "FCALL")
    }

    /// The single-key commands the store and its tools send, whose first argument is the key.
    private static let keyFirstNames: [StaticString] = [
        "SET", "GET", "DEL", "UNLINK", "EXISTS", "TYPE", "PTTL", "PEXPIRETIME", "PEXPIRE", "PEXPIREAT",
    ]

    private static func takesKeyFirst(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        for known in keyFirstNames where equalsIgnoringCase(name, known) {
            return true
        }
        return false
    }

    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ name: StaticString) -> Bool {
        guard bytes.count == name.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        for index in bytes.indices where bytes[index] & 0xDF != expected[index] & 0xDF { return false }
        return true
    }
}

/// Reads a command's arguments back from their RESP encoding (`$<length>\r\n<bytes>\r\n` each).
private struct ArgumentReader {
    let body: UnsafeBufferPointer<UInt8>
    var position = 0

    init(_ body: UnsafeBufferPointer<UInt8>) { self.body = body }

    mutating func next() -> UnsafeBufferPointer<UInt8>? {
        guard position < body.count, body[position] == UInt8(ascii: "$") else { return nil }
        var index = position + 1
        var length = 0
        while index < body.count, body[index] != 13 {
            length = length * 10 + Int(body[index] &- UInt8(ascii: "0"))
            index += 1
        }
        let start = index + 2
        guard start + length + 2 <= body.count else { return nil }
        position = start + length + 2
        return UnsafeBufferPointer(rebasing: body[start..<(start + length)])
    }
}
