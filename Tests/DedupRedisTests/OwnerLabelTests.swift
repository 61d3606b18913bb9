import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

@Suite("Owner labels in Redis values")
struct OwnerLabelTests {
    /// An in-flight value as stores wrote it before owner labels were kept: no `label=` field.
    static func unlabelledValue(token: String, fencing: Int, attempt: Int) -> String {
        "in_flight owner=\(token.utf8.count):\(token) fencing=\(fencing) attempt=\(attempt) lease_span_ms=5000 retention_ms=3600000 fp=-"
    }

    @Test(
        "values without a label (written before labels were kept) read, complete, are taken over with a label, and delete by filter"
    )
    func unlabelledValues() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let token = String(repeating: "ab", count: 16)
            // Live: its lease ends 60 s from now (the key expires a retention after that).
            let live = id("legacy", "live")
            try await server.cli(
                "SET",
                "dedup:6:legacy:live",
                Self.unlabelledValue(token: token, fencing: 3, attempt: 2),
                "PX",
                "3660000"
            )
            // Abandoned: its lease ended 10 s ago.
            let abandoned = id("legacy", "abandoned")
            try await server.cli(
                "SET",
                "dedup:6:legacy:abandoned",
                Self.unlabelledValue(token: token, fencing: 3, attempt: 2),
                "PX",
                "3590000"
            )
            let deletable = id("legacy", "deletable")
            try await server.cli(
                "SET",
                "dedup:6:legacy:deletable",
                Self.unlabelledValue(token: token, fencing: 1, attempt: 1),
                "PX",
                "3660000"
            )

            let read = try #require(try await store.record(for: live))
            #expect(read.state == .inFlight && read.ownerToken == token && read.ownerLabel == nil)
            #expect(read.fencingToken == 3 && read.attempt == 2)
            let listed = try await store.records(matching: RecordFilter(namespace: "legacy"), after: nil, limit: 10)
                .records
            #expect(listed.count == 3 && listed.allSatisfy { $0.ownerLabel == nil && $0.ownerToken == token })

            let held = try await store.claim(
                ClaimRequest(id: live, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-new")
            )
            #expect(held.kind == "inFlight" && held.record?.ownerLabel == nil)
            // The holder's lease, as a store of that time handed it out (no label), still completes.
            let holder = Lease(
                id: live,
                ownerToken: token,
                fencingToken: 3,
                attempt: 2,
                leaseUntil: read.leaseUntil!,
                isTakeover: false
            )
            try await store.complete(Completion(lease: holder, retention: .seconds(600)))
            let completed = try #require(try await store.record(for: live))
            #expect(completed.state == .completed && completed.fencingToken == 3 && completed.ownerLabel == nil)

            let answer = try await store.claim(
                ClaimRequest(id: abandoned, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-new")
            )
            let lease = try #require(answer.lease)
            #expect(lease.isTakeover && lease.fencingToken == 4 && lease.attempt == 3 && lease.ownerLabel == "pod-new")
            #expect(try await store.record(for: abandoned)?.ownerLabel == "pod-new")
            // Rewritten in the current layout: the new holder, then fencing 4 and attempt 3.
            let rewritten = try await server.cli("GET", "dedup:6:legacy:abandoned")
            #expect(
                rewritten.hasPrefix("in_flight 7:pod-new 32:\(lease.ownerToken) ") && rewritten.hasSuffix(" 1h f4 a3"),
                "\(rewritten)"
            )

            #expect(try await store.delete([deletable], matching: RecordFilter(state: .inFlight)) == 1)
            #expect(try await server.cli("EXISTS", "dedup:6:legacy:deletable") == "0")
            await store.close()
        }
    }

    @Test(
        "a lease keeps the owner check on its label too: the same token under another label is refused, nothing changes"
    )
    func labelIsPartOfTheOwnerHeader() async throws {
        try await withRedisServer { server in
            let store = try makeRedisStore(server.url)
            let record = id("orders", "labelled")
            let answer = try await store.claim(
                ClaimRequest(id: record, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-a")
            )
            let lease = try #require(answer.lease)
            var relabelled = lease
            relabelled.ownerLabel = "pod-b"
            await expectDedupError(.leaseLost) {
                try await store.complete(Completion(lease: relabelled, retention: .seconds(600)))
            }
            var unlabelled = lease
            unlabelled.ownerLabel = nil
            await expectDedupError(.leaseLost) { try await store.release(unlabelled) }
            #expect(try await store.record(for: record)?.state == .inFlight)
            try await store.complete(Completion(lease: lease, retention: .seconds(600)))
            #expect(try await store.record(for: record)?.state == .completed)
            await store.close()
        }
    }
}
