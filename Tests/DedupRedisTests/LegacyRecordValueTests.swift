import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

/// A store filled by the release before the compact value layout (``LegacyRedisRecord``'s values,
/// byte for byte) keeps its dedup state under this one.
@Suite("Records of the previous Redis value layout")
struct LegacyRecordValueTests {
    static let century = LegacyRedisRecord.retentionMilliseconds

    /// The lease the previous release handed the holder of `record` (a renewal or a completion
    /// needs only its token and label).
    static func holder(_ record: LegacyRedisRecord, _ id: RecordID, fencing: Int64 = 1, attempt: Int = 1) -> Lease {
        Lease(
            id: id,
            ownerToken: record.ownerToken!,
            fencingToken: fencing,
            attempt: attempt,
            leaseUntil: Date(),
            isTakeover: false,
            ownerLabel: record.ownerLabel
        )
    }

    @Test(
        "completed records are duplicates (single and batch) with every field, fingerprints compared; they list, count, reset and forget"
    )
    func completedRecords() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            try await server.setLegacy(.completedPlain, at: "dedup:6:legacy:plain")
            try await server.setLegacy(.completedBrokerFingerprintResult, at: "dedup:6:legacy:broker")
            try await server.setLegacy(.completedTakenOver, at: "dedup:6:legacy:takeover")
            let ids = ["plain", "broker", "takeover"].map { id("legacy", $0) }

            guard case .duplicate(let plain) = try await store.claim(request(ids[0])) else {
                Issue.record("a completed record of the previous layout is not a duplicate")
                return
            }
            #expect(plain.state == .completed && plain.fencingToken == 1 && plain.attempt == 1)
            #expect(
                plain.createdAt.millisecondsSince1970 == 1_796_592_678_019
                    && plain.completedAt?.millisecondsSince1970 == 1_796_592_678_100
            )
            #expect(plain.expiresAt.millisecondsSince1970 == 1_796_592_678_100 + Self.century)
            #expect(
                plain.fingerprint == nil && plain.result == nil && plain.brokerTime == nil && plain.ownerToken == nil
                    && plain.ownerLabel == nil
            )

            guard case .duplicate(let broker) = try await store.claim(request(ids[1], fingerprint: "fp 42")) else {
                Issue.record("a completed record with the same fingerprint is not a duplicate")
                return
            }
            #expect(broker.result == Data([0, 1, 2, 255, 32, 10, 45]) && broker.fingerprint == "fp 42")
            #expect(broker.brokerTime == Date(millisecondsSince1970: 1_600_000_000_123))
            #expect(
                broker.createdAt.millisecondsSince1970 == 1_796_592_678_033
                    && broker.completedAt?.millisecondsSince1970 == 1_796_592_678_121
            )
            #expect(try await store.claim(request(ids[1], fingerprint: "fp 43")).kind == "payloadMismatch")

            let batch = try await store.claim(batch: ids.map { request($0) } + [request(id("legacy", "fresh"))])
            #expect(batch.map(\.kind) == ["duplicate", "duplicate", "duplicate", "acquired"])
            let takenOver = try #require(batch[2].record)
            #expect(takenOver.fencingToken == 2 && takenOver.attempt == 2 && takenOver.result == Data("ok".utf8))
            #expect(takenOver.brokerTime == Date(millisecondsSince1970: 1_700_000_000_000))
            #expect(try await store.record(for: ids[0]) == plain)
            #expect(try await store.record(for: ids[1]) == broker)

            let listed = try await store.records(
                matching: RecordFilter(namespace: "legacy", state: .completed),
                after: nil,
                limit: 10
            )
            #expect(Set(listed.records.map(\.id.key)) == ["plain", "broker", "takeover"])
            let stats = try await store.stats()
            #expect(stats.namespaces.first?.completed == 3 && stats.namespaces.first?.inFlight == 1)

            // Reset by broker time ([2020-09-13, 2023-11-14 22:13:20.001)) takes the two records that
            // carry one; the plain one goes by its completion time, then by forget.
            let byBroker = RecordFilter(
                state: .completed,
                from: Date(millisecondsSince1970: 1_600_000_000_000),
                until: Date(millisecondsSince1970: 1_700_000_000_001)
            )
            #expect(try await store.delete(ids, matching: byBroker) == 2)
            let byCompletion = RecordFilter(
                state: .completed,
                from: Date(millisecondsSince1970: 1_796_592_678_100),
                until: Date(millisecondsSince1970: 1_796_592_678_101)
            )
            #expect(
                try await store.records(matching: byCompletion, after: nil, limit: 10).records.map(\.id) == [ids[0]]
            )
            #expect(try await store.forget(ids[0]))
            // Reset records are claimed anew.
            let again = try #require(try await store.claim(request(ids[1])).lease)
            #expect(again.fencingToken == 1 && !again.isTakeover)
            await store.close()
        }
    }

    @Test(
        "in-flight records: held for their holder, who renews, completes (alone or in a batch) or releases them; abandoned ones are taken over with fencing + 1; every rewrite is in the current layout"
    )
    func inFlightRecords() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let names = ["plain", "broker", "released", "abandoned", "unlabelled"]
            let ids = Dictionary(uniqueKeysWithValues: names.map { ($0, id("legacy", $0)) })
            try await server.setLegacy(.inFlightPlain, at: "dedup:6:legacy:plain")
            try await server.setLegacy(.inFlightBrokerFingerprint, at: "dedup:6:legacy:broker")
            try await server.setLegacy(.inFlightRenewed, at: "dedup:6:legacy:released")
            // Its lease ended 10 s ago: the key expires a retention after the lease.
            try await server.setLegacy(
                .inFlightTakenOver,
                at: "dedup:6:legacy:abandoned",
                expiringIn: Self.century - 10_000
            )
            try await server.setLegacy(.inFlightUnlabelled, at: "dedup:6:legacy:unlabelled")

            // Held: another claim finds the holder, its label and its times (off the key's expiry).
            let held = try await store.claim(
                ClaimRequest(id: ids["plain"]!, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-new")
            )
            #expect(held.kind == "inFlight")
            let plain = try #require(held.record)
            #expect(
                plain.ownerToken == LegacyRedisRecord.inFlightPlain.ownerToken && plain.ownerLabel == "web-7.prod:4711"
            )
            #expect(plain.fencingToken == 1 && plain.attempt == 1)
            let expiry = try #require(Int64(try await server.cli("PEXPIRETIME", "dedup:6:legacy:plain")))
            #expect(plain.leaseUntil?.millisecondsSince1970 == expiry + 1 - Self.century)
            #expect(plain.createdAt.millisecondsSince1970 == expiry + 1 - Self.century - 30_000)
            #expect(try await store.claim(request(ids["broker"]!, fingerprint: "fp 43")).kind == "payloadMismatch")

            // Its holder renews (rewritten in the current layout, first claim kept), then completes
            // with a lease that does not say when the record was first claimed.
            let renewed = try await store.renew(Self.holder(.inFlightPlain, ids["plain"]!), for: .seconds(90))
            let rewritten = try await server.cli("GET", "dedup:6:legacy:plain")
            #expect(
                rewritten.hasPrefix("in_flight 15:web-7.prod:4711 32:\(plain.ownerToken!) ")
                    && rewritten.hasSuffix(" 3155760000000"),
                "\(rewritten)"
            )
            let afterRenewal = try #require(try await store.record(for: ids["plain"]!))
            #expect(afterRenewal.createdAt == plain.createdAt && afterRenewal.leaseUntil == renewed.leaseUntil)
            try await store.complete(Completion(lease: renewed, retention: .seconds(600)))
            guard case .duplicate(let completedPlain) = try await store.claim(request(ids["plain"]!)) else {
                Issue.record("the completed record is not a duplicate")
                return
            }
            #expect(completedPlain.createdAt == plain.createdAt && completedPlain.fencingToken == 1)
            #expect(
                try await server.cli("GET", "dedup:6:legacy:plain").hasPrefix(
                    "done \(String(plain.createdAt.millisecondsSince1970, radix: 36)) "
                )
            )

            // Completed straight from the previous layout by a lease that carries its first claim:
            // broker time, fingerprint and first claim kept, the result added.
            var brokerLease = Self.holder(.inFlightBrokerFingerprint, ids["broker"]!)
            let broker = try #require(try await store.record(for: ids["broker"]!))
            brokerLease.claimedAt = broker.createdAt
            try await store.complete(
                Completion(lease: brokerLease, retention: .seconds(600), result: Data("done".utf8))
            )
            let completedBroker = try #require(try await store.record(for: ids["broker"]!))
            #expect(completedBroker.state == .completed && completedBroker.createdAt == broker.createdAt)
            #expect(completedBroker.brokerTime == Date(millisecondsSince1970: 1_600_000_000_123))
            #expect(completedBroker.fingerprint == "fp 42" && completedBroker.result == Data("done".utf8))
            #expect(
                try await server.cli("GET", "dedup:6:legacy:broker").hasSuffix(
                    " 10m b\(broker.createdAt.millisecondsSince1970 - 1_600_000_000_123) p5:fp 42 r4:done"
                )
            )

            // Only the holder releases: not the same token under another label.
            var stranger = Self.holder(.inFlightRenewed, ids["released"]!)
            stranger.ownerLabel = "pod b"
            await expectDedupError(.leaseLost) { try await store.release(stranger) }
            await expectDedupError(.leaseLost) {
                try await store.complete(Completion(lease: stranger, retention: .seconds(600)))
            }
            try await store.release(Self.holder(.inFlightRenewed, ids["released"]!))
            #expect(try await server.cli("EXISTS", "dedup:6:legacy:released") == "0")

            // Abandoned: taken over with fencing and attempt 3, its broker time kept.
            let takeover = try #require(
                try await store.claim(
                    ClaimRequest(
                        id: ids["abandoned"]!,
                        lease: .seconds(30),
                        retention: .seconds(3600),
                        ownerLabel: "pod-new"
                    )
                ).lease
            )
            #expect(takeover.isTakeover && takeover.fencingToken == 3 && takeover.attempt == 3)
            let taken = try await server.cli("GET", "dedup:6:legacy:abandoned")
            #expect(
                taken.hasPrefix("in_flight 7:pod-new 32:\(takeover.ownerToken) ")
                    && taken.hasSuffix(" 1h b\(String(1_700_000_000_000, radix: 36)) f3"),
                "\(taken)"
            )

            // A batch completes the takeover and the unlabelled record's holder (fencing 3, attempt 2) together.
            let unlabelled = Self.holder(.inFlightUnlabelled, ids["unlabelled"]!, fencing: 3, attempt: 2)
            let answers = try await store.complete(batch: [
                Completion(lease: takeover, retention: .seconds(600)),
                Completion(lease: unlabelled, retention: .seconds(600)),
            ])
            #expect(answers == [.completed, .completed])
            let completedTakeover = try #require(try await store.record(for: ids["abandoned"]!))
            #expect(completedTakeover.state == .completed && completedTakeover.fencingToken == 3)
            #expect(completedTakeover.brokerTime == Date(millisecondsSince1970: 1_700_000_000_000))
            let completedUnlabelled = try #require(try await store.record(for: ids["unlabelled"]!))
            #expect(
                completedUnlabelled.state == .completed && completedUnlabelled.fencingToken == 3
                    && completedUnlabelled.attempt == 2
            )
            #expect(try await server.cli("GET", "dedup:6:legacy:unlabelled").hasSuffix(" 10m f3 a2"))
            await store.close()
        }
    }
}
