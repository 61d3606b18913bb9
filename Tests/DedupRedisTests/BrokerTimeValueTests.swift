import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

@Suite("Broker time in Redis values")
struct BrokerTimeValueTests {
    @Test(
        "the creating claim writes b<base 36 ms> after the lease times; a takeover, a renewal and a completion (also one dated from the key's expiry, as the wait before the first claim) carry it"
    )
    func fieldIsWrittenAndCarried() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("orders", "o-1")
            let published = Date(millisecondsSince1970: 1_600_000_000_123)
            let first = try #require(
                try await store.claim(
                    ClaimRequest(
                        id: record,
                        lease: .milliseconds(200),
                        retention: .seconds(3600),
                        ownerLabel: "pod-a",
                        brokerTime: published
                    )
                ).lease
            )
            let broker = String(1_600_000_000_123, radix: 36)
            #expect(
                try await server.cli("GET", "dedup:6:orders:o-1")
                    == "in_flight 5:pod-a 32:\(first.ownerToken) 200 1h b\(broker)"
            )
            _ = try await store.renew(first, for: .milliseconds(200))
            let renewed = try await server.cli("GET", "dedup:6:orders:o-1")
            #expect(
                renewed.hasPrefix("in_flight 5:pod-a 32:\(first.ownerToken) ") && renewed.hasSuffix(" 1h b\(broker)"),
                "\(renewed)"
            )
            // Wait for the lease to pass (the server's clock decides), then take it over with another broker time.
            var takeover: Lease?
            for _ in 0..<100 where takeover == nil {
                try await Task.sleep(for: .milliseconds(50))
                takeover = try await store.claim(
                    ClaimRequest(
                        id: record,
                        lease: .seconds(30),
                        retention: .seconds(3600),
                        ownerLabel: "pod-b",
                        brokerTime: Date(millisecondsSince1970: 5)
                    )
                ).lease
            }
            let second = try #require(takeover)
            let taken = try await server.cli("GET", "dedup:6:orders:o-1")
            #expect(
                taken.hasPrefix("in_flight 5:pod-b 32:\(second.ownerToken) ") && taken.hasSuffix(" 1h b\(broker) f2"),
                "\(taken)"
            )
            // A lease that does not say when its record was first claimed: the completion dates it
            // from the key's expiry, reading past the broker time.
            let undated = Lease(
                id: record,
                ownerToken: second.ownerToken,
                fencingToken: second.fencingToken,
                attempt: second.attempt,
                leaseUntil: second.leaseUntil,
                isTakeover: true,
                ownerLabel: "pod-b"
            )
            try await store.complete(Completion(lease: undated, retention: .seconds(600)))
            let completed = try #require(try await store.record(for: record))
            #expect(completed.brokerTime == published && completed.createdAt == second.claimedAt)
            let created = try #require(second.claimedAt).millisecondsSince1970
            let took = try #require(completed.completedAt).millisecondsSince1970 - created
            #expect(
                try await server.cli("GET", "dedup:6:orders:o-1")
                    == "done \(String(created, radix: 36)) \(took) 10m b\(created - 1_600_000_000_123) f2"
            )
            await store.close()
        }
    }

    @Test(
        "values without a broker time (claimed without one, or written before) read and delete by record time; values with it delete by broker time (the previous layout and the current)",
        arguments: [false, true]
    )
    func oldAndNewLayoutsFilter(currentLayout: Bool) async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let token = String(repeating: "ab", count: 16)
            // First claimed at 1000, completed at 2000; broker times 5000 and 6000.
            let old =
                currentLayout
                ? "done \(String(1000, radix: 36)) 1000 99999999999999"
                : "completed fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=99999999999999 result=-"
            let new =
                currentLayout
                ? "done \(String(1000, radix: 36)) 1000 99999999999999 b-4000"
                : "completed b=5000 fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=99999999999999 result=-"
            let flying =
                currentLayout
                ? "in_flight - \(token.utf8.count):\(token) 5s 1h b\(String(6000, radix: 36))"
                : "in_flight owner=\(token.utf8.count):\(token) b=6000 fencing=1 attempt=1 lease_span_ms=5000 retention_ms=3600000 fp=-"
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
            let flyingRange = RecordFilter(
                from: Date(millisecondsSince1970: 6000),
                until: Date(millisecondsSince1970: 6001)
            )
            #expect(try await store.delete(ids, matching: flyingRange) == 1)
            #expect(try await store.stats().total == 0)
            await store.close()
        }
    }
}
