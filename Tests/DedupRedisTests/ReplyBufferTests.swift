import CHiredis
import Testing

@testable import DedupRedis

/// A fresh hiredis reader whose replies go to a fresh ``ReplyBuffer``, both freed after `body`.
func withReplyReader<T>(_ body: (UnsafeMutablePointer<redisReader>, borrowing ReplyBuffer) throws -> T) throws -> T {
    // Declared first, so it is freed after the reader that points to it.
    let buffer = ReplyBuffer()
    let reader = try #require(redisReaderCreate())
    defer { redisReaderFree(reader) }
    buffer.attach(to: reader)
    return try body(reader, buffer)
}

/// Feeds `resp` at once to a fresh reader; returns the `count` replies read, and checks that
/// nothing else was fed.
func readReplies(_ resp: [UInt8], count: Int) throws -> [RedisReply] {
    try withReplyReader { reader, buffer in
        let fed = resp.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { redisReaderFeed(reader, $0.baseAddress, $0.count) }
        }
        #expect(fed == REDIS_OK)
        var replies: [RedisReply] = []
        for _ in 0..<count {
            var raw: UnsafeMutableRawPointer?
            #expect(redisReaderGetReply(reader, &raw) == REDIS_OK)
            try #require(raw != nil, "a whole reply was fed")
            replies.append(buffer.take())
        }
        var rest: UnsafeMutableRawPointer?
        #expect(redisReaderGetReply(reader, &rest) == REDIS_OK && rest == nil, "nothing but the replies was fed")
        return replies
    }
}

/// hiredis's own reader, fed RESP bytes, building its replies in a ``ReplyBuffer``: every kind of
/// value the store can meet comes back as the same ``RedisReply`` tree.
@Suite("ReplyBuffer with hiredis's reader")
struct ReplyBufferTests {
    @Test("strings (empty, binary with NUL), status, error, integers, nil and nested arrays with nil elements")
    func everyKind() throws {
        let resp =
            Array(
                "$5\r\nhello\r\n$0\r\n\r\n$3\r\na\0b\r\n+OK\r\n-ERR wrong\r\n:-42\r\n:9223372036854775807\r\n$-1\r\n*-1\r\n*0\r\n"
                    .utf8
            )
            + Array("*3\r\n:1\r\n*2\r\n$-1\r\n*1\r\n$1\r\nx\r\n+QUEUED\r\n".utf8)
        let replies = try readReplies(resp, count: 11)
        #expect(
            replies == [
                .string(Array("hello".utf8)), .string([]), .string([UInt8(ascii: "a"), 0, UInt8(ascii: "b")]),
                .status("OK"),
                .error("ERR wrong"), .integer(-42), .integer(.max), .null, .null, .array([]),
                .array([.integer(1), .array([.null, .array([.string([UInt8(ascii: "x")])])]), .status("QUEUED")]),
            ]
        )
    }

    @Test("a reply larger than the storage kept between replies reads whole, and the next one after it")
    func largeReply() throws {
        let large = [UInt8](repeating: UInt8(ascii: "r"), count: 3 << 20)
        let resp = Array("$\(large.count)\r\n".utf8) + large + Array("\r\n*2\r\n$2\r\nok\r\n:7\r\n".utf8)
        let replies = try readReplies(resp, count: 2)
        #expect(replies == [.string(large), .array([.string(Array("ok".utf8)), .integer(7)])])
    }

    @Test("a reply split across many feeds is read once it is whole")
    func splitFeeds() throws {
        let resp = Array("*2\r\n$10\r\n0123456789\r\n*1\r\n:5\r\n".utf8)
        let reply = try withReplyReader { reader, buffer -> RedisReply? in
            var reply: RedisReply?
            for byte in resp {
                var one = CChar(bitPattern: byte)
                #expect(redisReaderFeed(reader, &one, 1) == REDIS_OK)
                var raw: UnsafeMutableRawPointer?
                #expect(redisReaderGetReply(reader, &raw) == REDIS_OK)
                if raw != nil { reply = buffer.take() }
            }
            return reply
        }
        #expect(reply == .array([.string(Array("0123456789".utf8)), .array([.integer(5)])]))
    }
}
