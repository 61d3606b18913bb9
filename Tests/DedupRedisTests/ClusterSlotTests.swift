import Testing

@testable import DedupRedis

/// Hash slots and the keys read back from encoded commands, without a server.
@Suite("Redis Cluster hash slots")
struct ClusterSlotTests {
    @Test func crc16MatchesTheClusterSpecification() {
        // The specification's check value: CRC16("123456789") = 0x31C3.
        let bytes = Array("123456789".utf8)
        #expect(bytes.withUnsafeBufferPointer { ClusterSlot.crc16($0) } == 0x31C3)
    }

    @Test func hashTagsHashOnlyTheirContent() {
        #expect(
            ClusterSlot.slot(of: Array("{user1000}.following".utf8)) == ClusterSlot.slot(of: Array("user1000".utf8))
        )
        #expect(
            ClusterSlot.slot(of: Array("{user1000}.followers".utf8))
                == ClusterSlot.slot(of: Array("{user1000}.following".utf8))
        )
        // An empty tag is no tag: the whole key is hashed.
        #expect(ClusterSlot.slot(of: Array("foo{}{bar}".utf8)) != ClusterSlot.slot(of: Array("bar".utf8)))
        #expect(ClusterSlot.slot(of: Array("foo{{bar}}zap".utf8)) == ClusterSlot.slot(of: Array("{bar".utf8)))
    }

    @Test func commandsNameTheirKeysSlot() {
        let key = Array("dedup:6:orders:42".utf8)
        let slot = ClusterSlot.slot(of: key)
        var set = RedisCommand("SET")
        set.append(key)
        set.append("value")
        #expect(set.clusterSlot == slot)
        var script = RedisCommand("EVALSHA", String(repeating: "a", count: 40), "1")
        script.append(key)
        script.append("owner")
        #expect(script.clusterSlot == slot)
        #expect(RedisCommand("EVALSHA", "abc", "0").clusterSlot == nil)
        #expect(RedisCommand("TIME").clusterSlot == nil)
        #expect(RedisCommand("SCAN", "0", "MATCH", "dedup:*").clusterSlot == nil)
    }

    @Test func redirectsAreRead() {
        #expect(
            ClusterRedirect(.error("MOVED 3999 127.0.0.1:6381"))
                == ClusterRedirect(target: .init(host: "127.0.0.1", port: 6381), isAsk: false)
        )
        #expect(ClusterRedirect(.error("ASK 3999 ::1:6381"))?.target == .init(host: "::1", port: 6381))
        #expect(ClusterRedirect(.error("ASK 3999 ::1:6381"))?.isAsk == true)
        #expect(ClusterRedirect(.error("ERR MOVED")) == nil)
        #expect(ClusterRedirect(.status("MOVED 1 a:1")) == nil)
    }
}
