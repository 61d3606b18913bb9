import DedupTestSupport
import Dedup
import DedupRedis
import Foundation
import Testing

@Suite("Broker time in Redis values")
struct BrokerTimeValueTests {
    @Test("the creating claim writes b=<ms> after the owner header; a takeover, a renewal and a completion (also one dated from the key's expiry) carry it")
    func fieldIsWrittenAndCarried() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("orders", "o-1")
            let published = Date(millisecondsSince1970: 1_600_000_000_123)
            let first = try #require(
                try await store.claim(
                    ClaimRequest(id: record, lease: .milliseconds(200), retention: .seconds(3600), ownerLabel: "pod-a", brokerTime: published)
                ).lease)
            let value = try await server.cli("GET", "dedup:6:orders:o-1")
            #expect(value.hasPrefix("in_flight label=5:pod-a owner=32:\(first.ownerToken) b=1600000000123 fencing=1 attempt=1 "))
            _ = try await store.renew(first, for: .milliseconds(200))
            #expect(try await server.cli("GET", "dedup:6:orders:o-1").contains(" b=1600000000123 fencing=1 "))
            // Wait for the lease to pass (the server's clock decides), then take it over with another broker time.
            var takeover: Lease?
            for _ in 0..<100 where takeover == nil {
                try await Task.sleep(for: .milliseconds(50))
                takeover = try await store.claim(
                    ClaimRequest(id: record, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-b",
                        brokerTime: Date(millisecondsSince1970: 5))
                ).lease
            }
            let second = try #require(takeover)
            #expect(try await server.cli("GET", "dedup:6:orders:o-1").hasPrefix("in_flight label=5:pod-b owner=32:\(second.ownerToken) b=1600000000123 fencing=2 "))
            // A lease that does not say when its record was first claimed: the completion dates it
            // from the key's expiry, reading past the broker time.
            let undated = Lease(
                id: record, ownerToken: second.ownerToken, fencingToken: second.fencingToken, attempt: second.attempt,
                leaseUntil: second.leaseUntil, isTakeover: true, ownerLabel: "pod-b")
            try await store.complete(Completion(lease: undated, retention: .seconds(600)))
            #expect(try await server.cli("GET", "dedup:6:orders:o-1").hasPrefix("completed b=1600000000123 fencing=2 attempt=2 "))
            let completed = try #require(try await store.record(for: record))
            #expect(completed.brokerTime == published && completed.createdAt == second.claimedAt)
            await store.close()
        }
    }

    @Test("values without b= (claimed without a broker time, or written before) read and delete by record time; values with it delete by broker time")
    func oldAndNewLayoutsFilter() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let token = String(repeating: "ab", count: 16)
            let old = "completed fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=99999999999999 result=-"
            let new = "completed b=5000 fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=99999999999999 result=-"
            let flying = "in_flight owner=\(token.utf8.count):\(token) b=6000 fencing=1 attempt=1 lease_span_ms=5000 retention_ms=3600000 fp=-"
            try await server.cli("SET", "dedup:2:ns:old", old, "PX", "3600000")
            try await server.cli("SET", "dedup:2:ns:new", new, "PX", "3600000")
            try await server.cli("SET", "dedup:2:ns:flying", flying, "PX", "3660000")
            #expect(try await store.record(for: id("ns", "old"))?.brokerTime == nil)
            #expect(try await store.record(for: id("ns", "new"))?.brokerTime == Date(millisecondsSince1970: 5000))
            #expect(try await store.record(for: id("ns", "flying"))?.brokerTime == Date(millisecondsSince1970: 6000))
            let ids = [id("ns", "old"), id("ns", "new"), id("ns", "flying")]
            // [1500, 5500): "old" by its completion (2000) and "new" by its broker time (5000);
            // "flying" (broker time 6000, claimed just now) is outside.
            let range = RecordFilter(from: Date(millisecondsSince1970: 1500), until: Date(millisecondsSince1970: 5500))
            let listed = try await store.records(matching: range, after: nil, limit: 10).records.map(\.id.key).sorted()
            #expect(listed == ["new", "old"])
            #expect(try await store.delete(ids, matching: range) == 2)
            #expect(try await server.cli("EXISTS", "dedup:2:ns:flying") == "1")
            let flyingRange = RecordFilter(from: Date(millisecondsSince1970: 6000), until: Date(millisecondsSince1970: 6001))
            #expect(try await store.delete(ids, matching: flyingRange) == 1)
            #expect(try await store.stats().total == 0)
            await store.close()
        }
    }
}
