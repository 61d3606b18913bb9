import Dedup
import DedupRedis
import Foundation
import Logging
import Testing

@testable import DedupRedisStreams

/// How the runner reads `XREADGROUP` and `XAUTOCLAIM` replies and finds an entry's key, without a
/// server (a stream client connects on first use).
@Suite("Stream replies and keys, without a server")
struct StreamParsingTests {
    let client = StreamClient(
        endpoint: try! RedisEndpoint(url: "redis://127.0.0.1:1"),
        configuration: RedisStreamConsumer.Configuration(stream: "orders", group: "billing"),
        logger: Logger(label: "test")
    )

    func bulk(_ text: String) -> RedisReply { .string(Array(text.utf8)) }

    @Test(
        "a read gives each entry with its fields in order, binary values kept, and the IDs of entries trimmed while pending"
    )
    func read() throws {
        let reply = RedisReply.array([
            .array([
                bulk("orders"),
                .array([
                    .array([
                        bulk("1700000000123-0"),
                        .array([bulk("order"), bulk("o-1"), bulk("blob"), .string([0x61, 0, 0x62])]),
                    ]),
                    .array([bulk("1700000000124-7"), .null]),
                    .array([bulk("1700000000125-0"), .array([])]),
                ]),
            ])
        ])
        let read = try client.parseRead(reply)
        #expect(read.trimmed == [StreamEntryID(milliseconds: 1_700_000_000_124, sequence: 7)])
        #expect(read.entries.map(\.id.description) == ["1700000000123-0", "1700000000125-0"])
        let first = try #require(read.entries.first)
        #expect(
            first.fields == [
                StreamEntry.Field("order", "o-1"), StreamEntry.Field(name: Array("blob".utf8), value: [0x61, 0, 0x62]),
            ]
        )
        #expect(first["order"] == "o-1" && first["missing"] == nil)
        #expect(first.id.brokerTime == Date(timeIntervalSince1970: 1_700_000_000.123))
        #expect(read.entries[1].fields.isEmpty)
    }

    @Test("a read whose wait ended without entries is empty")
    func emptyRead() throws {
        for reply in [nil, RedisReply.null, .array([])] {
            let read = try client.parseRead(reply)
            #expect(read.entries.isEmpty && read.trimmed.isEmpty)
        }
    }

    @Test(
        "a reply of another shape is a storeError",
        arguments: [
            RedisReply.integer(1),
            .array([.array([.string(Array("orders".utf8))])]),
            .array([
                .array([
                    .string(Array("orders".utf8)), .array([.array([.string(Array("not-an-id".utf8)), .array([])])]),
                ])
            ]),
        ]
    )
    func unexpectedShape(reply: RedisReply) {
        #expect(throws: DedupError.self) { try client.parseRead(reply) }
    }

    @Test("the entry ID strategy keys by the ID; the field strategy by the field's value, and finds no key without it")
    func keyStrategies() {
        let entry = StreamEntry(id: StreamEntryID(milliseconds: 12, sequence: 3), fields: [.init("order", "o-7")])
        #expect(KeyStrategy<StreamEntry>.entryID.key(for: entry) == "12-3")
        let byOrder = KeyStrategy<StreamEntry>.field("order")
        let other = StreamEntry(id: StreamEntryID(milliseconds: 13, sequence: 0), fields: [.init("order", "o-7")])
        #expect(byOrder.key(for: entry) != nil && byOrder.key(for: entry) == byOrder.key(for: other))
        #expect(byOrder.key(for: StreamEntry(id: .zero, fields: [.init("payment", "p-1")])) == nil)
        #expect(byOrder.key(for: StreamEntry(id: .zero, fields: [.init("order", "")])) == nil)
    }
}
