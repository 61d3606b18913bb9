import Dedup
import Foundation

// MARK: - Identity

extension DedupConformance {
    /// Pairs that a careless encoding (joining with a delimiter, escaping badly, normalising Unicode,
    /// glob or LIKE patterns) would merge. All are different byte strings, so all are different records.
    static let trickyIdentities: [(String, String)] = [
        ("a:b", "c"), ("a", "b:c"), ("a", "b"), ("a:", "b"), ("a", ":b"), ("1:a", "b"), ("1", "a:b"), ("3:a:b", "c"),
        ("a b", "c"), ("a", "b c"), ("a\nb", "c"), ("a", "b\nc"), ("a\r\n", "b"), ("a", "\r\nb"),
        ("a\u{0}b", "c"), ("a", "b\u{0}c"), ("a\u{0}", "b"), ("a", "\u{0}b"), ("ns", "k\u{0}"), ("ns", "\u{0}"),
        ("ns", "k"), ("ns", "k "), ("ns", " k"), ("ns\t", "k"), ("ns", "k\t"), ("ns|k", "x"), ("ns", "k|x"),
        ("ns", "😀"), ("ns", "😀😀"), ("😀", "ns"), ("ns", "👩‍👩‍👧"), ("ns", "\u{FEFF}k"),
        ("ns", "é"), ("ns", "e\u{301}"),  // canonically equivalent, different bytes
        ("ns", "*"), ("ns", "?"), ("ns", "[k]"), ("ns", "k*"), ("ns*", "k"), ("n?", "k"),
        ("ns", "%"), ("ns", "_"), ("ns", "k%"), ("n_", "k"), ("n%", "k"), ("ns", "\\"), ("ns", "\\0"),
        ("ns", "'; DROP TABLE dedup; --"), ("ns", "{tag}k"), ("ns", "k\"quoted\""), ("ns", "$-1"),
    ]

    static let identityChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "identities with delimiters, spaces, newlines, NUL, emoji, pattern characters, and byte-different but canonically equivalent text stay distinct"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let ids = try trickyIdentities.map { try RecordID(namespace: $0.0, key: $0.1) }
            try expectEqual(Set(ids.map(IdentityBytes.init)).count, ids.count, "distinct test identities")
            for (index, id) in ids.enumerated() {
                // Anything but a fresh acquisition means another identity shares this one's stored key.
                let lease = try await env.acquire(id, "claim of a distinct identity")
                try await env.store.complete(
                    Completion(lease: lease, retention: env.longLease, result: Data("\(index)".utf8))
                )
            }
            for (index, id) in ids.enumerated() {
                let record = try await env.existingRecord(id)
                try expectSameBytes(record.id, id, "identity read back")
                try expectEqual(record.result, Data("\(index)".utf8), "result of \(id)")
            }
            try expectEqual(
                try await env.listedIdentities(RecordFilter()),
                Set(ids.map(IdentityBytes.init)),
                "identities listed"
            )
            for namespace in Set(ids.map(\.namespace)) {
                let expected = Set(
                    ids.filter { Array($0.namespace.utf8) == Array(namespace.utf8) }.map(IdentityBytes.init)
                )
                try expectEqual(
                    try await env.listedIdentities(RecordFilter(namespace: namespace)),
                    expected,
                    "identities listed in namespace \(namespace.debugDescription)"
                )
            }
            try expectEqual(try await env.store.stats().total, ids.count, "records counted")
            let forgotten = ids[0]
            try expect(try await env.store.forget(forgotten), "forget \(forgotten)")
            for id in ids.dropFirst() {
                try expect(try await env.store.record(for: id) != nil, "forgetting \(forgotten) also removed \(id)")
            }
        },

        ConformanceCheck(
            "the longest namespace (128 bytes) and key (512 bytes), multi-byte characters included, work in every operation"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let namespace = String(repeating: "😀", count: 32)
            let stem = String(repeating: "k", count: 510)
            let first = try RecordID(namespace: namespace, key: stem + "é")  // é is C3 A9
            let second = try RecordID(namespace: namespace, key: stem + "è")  // è is C3 A8: only the last byte differs
            try expectEqual(namespace.utf8.count, RecordID.maximumNamespaceBytes, "namespace bytes")
            try expectEqual(first.key.utf8.count, RecordID.maximumKeyBytes, "key bytes")
            let lease = try await env.acquire(first)
            let other = try await env.acquire(second)
            let renewed = try await env.store.renew(lease, for: env.longLease)
            try await env.store.complete(Completion(lease: renewed, retention: env.longLease, result: Data("max".utf8)))
            let record = try expectDuplicate(try await env.claim(first), "claim of the completed longest key")
            try expectSameBytes(record.id, first, "identity read back")
            try expectEqual(record.result, Data("max".utf8), "result")
            try expectEqual(
                try await env.existingRecord(second).ownerToken,
                other.ownerToken,
                "the neighbour key's owner"
            )
            let listed = try await env.listedIdentities(RecordFilter(namespace: namespace, keyPrefix: stem))
            try expectEqual(
                listed,
                [IdentityBytes(first), IdentityBytes(second)],
                "listed by namespace and a 510-byte prefix"
            )
            let stats = try await env.store.stats()
            try expectEqual(stats.namespaces.map(\.namespace), [namespace], "namespaces in stats")
            try expectEqual(
                try await env.store.delete([first, second], matching: RecordFilter(state: .completed)),
                1,
                "deleted completed"
            )
            try expect(try await env.store.forget(second), "forget the in-flight longest key")
            try expectEqual(try await env.store.stats().total, 0, "records left")
        },

        ConformanceCheck(
            "namespaces are isolated: the same key in two namespaces, and a namespace that prefixes another, are separate records"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let inA = try env.id("m-1", in: "group-a")
            let inB = try env.id("m-1", in: "group-b")
            let inPrefix = try env.id("a:m-1", in: "group")
            let leaseA = try await env.acquire(inA)
            let leaseB = try await env.acquire(inB, lease: env.longLease)
            _ = try await env.acquire(inPrefix)
            try expectEqual(leaseA.fencingToken, 1, "fencing in group-a")
            try expectEqual(leaseB.fencingToken, 1, "fencing in group-b")
            try await env.store.complete(Completion(lease: leaseA, retention: env.retention))
            _ = try expectDuplicate(try await env.claim(inA), "group-a after its completion")
            _ = try expectInFlight(try await env.claim(inB), "group-b while group-a is completed")
            try expectEqual(
                try await env.listedIdentities(RecordFilter(namespace: "group-a")),
                [IdentityBytes(inA)],
                "listed in group-a"
            )
            try expectEqual(
                try await env.listedIdentities(RecordFilter(namespace: "group")),
                [IdentityBytes(inPrefix)],
                "listed in group"
            )
            try expectEqual(
                try await env.store.delete([inA, inB, inPrefix], matching: RecordFilter(namespace: "group-a")),
                1,
                "deleted in group-a"
            )
            try expectEqual(try await env.store.record(for: inA), nil, "group-a after delete")
            try expect(try await env.store.record(for: inB) != nil, "group-b must survive a delete in group-a")
            try expect(try await env.store.record(for: inPrefix) != nil, "group must survive a delete in group-a")
            try expectEqual(
                try await env.store.stats().namespaces.map(\.namespace),
                ["group", "group-b"],
                "namespaces in stats"
            )
        },
    ]
}

// MARK: - Inspection: listing, deleting, purging, stats

extension DedupConformance {
    static let inspectionChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "paging 250 live records by 100 returns each exactly once and no expired record, following cursors to the end"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            for index in 0..<20 {
                _ = try await env.acquire(env.id("expired-\(index)", in: "page"), lease: env.unit, retention: env.unit)
            }
            try await env.advance(units: 3)
            var expected: [RecordID] = []
            for index in 0..<250 {
                let id = try env.id("k-\(String(index).leftPadded(to: 3))", in: "page")
                if index.isMultiple(of: 3) {
                    try await env.acquireAndComplete(id, lease: env.longLease, retention: env.longLease)
                } else {
                    _ = try await env.acquire(id, lease: env.longLease, retention: env.longLease)
                }
                expected.append(id)
            }
            for index in 0..<5 {
                try await env.acquireAndComplete(env.id("o-\(index)", in: "other"), retention: env.longLease)
            }

            let listed = try await env.listAll(RecordFilter(namespace: "page"), limit: 100)
            try expectEqual(
                Set(listed.map { IdentityBytes($0.id) }),
                Set(expected.map(IdentityBytes.init)),
                "records paged in namespace page"
            )
            try expectEqual(
                try await env.listAll(RecordFilter(), limit: 100).count,
                255,
                "records paged in the whole store"
            )
            try expectEqual(
                try await env.listAll(RecordFilter(namespace: "other"), limit: 1).count,
                5,
                "records paged one at a time"
            )
            for record in listed where record.id.key == "k-003" {
                try expectEqual(record.state, .completed, "state of a completed record in a listing")
                try expect(record.completedAt != nil, "completedAt of a completed record in a listing")
            }

            if harness.pagesInRecordIDOrder {
                var sizes: [Int] = []
                var all: [DedupRecord] = []
                var cursor: PageCursor?
                repeat {
                    let page = try await env.store.records(
                        matching: RecordFilter(namespace: "page"),
                        after: cursor,
                        limit: 100
                    )
                    sizes.append(page.records.count)
                    all += page.records
                    cursor = page.next
                } while cursor != nil && sizes.count < 10
                try expectEqual(sizes, [100, 100, 50], "page sizes of a store paging in RecordID order")
                try expect(
                    zip(all, all.dropFirst()).allSatisfy { $0.id < $1.id },
                    "records must come in RecordID order"
                )
            }
        },

        ConformanceCheck(
            "listing filters by namespace, state, time range and key prefix, taking %, _, * and [ in a prefix literally"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            func id(_ key: String, _ namespace: String = "alpha") throws -> RecordID { try env.id(key, in: namespace) }
            // Early records.
            try await env.acquireAndComplete(id("order-1"), retention: env.longLease)
            try await env.acquireAndComplete(id("order-2"), retention: env.longLease)
            _ = try await env.acquire(id("order-3"), lease: env.longLease, retention: env.longLease)
            try await env.acquireAndComplete(id("order-1", "beta"), retention: env.longLease)
            try await env.advance(units: 2)
            // Late records.
            try await env.acquireAndComplete(id("order-4"), retention: env.longLease)
            _ = try await env.acquire(id("refund-1"), lease: env.longLease, retention: env.longLease)
            for key in ["a%b", "a_b", "axb", "a*b", "a[b]", "ab"] {
                try await env.acquireAndComplete(id(key), retention: env.longLease)
            }
            let late = try await env.existingRecord(id("order-4")).recordTime

            func keys(_ filter: RecordFilter) async throws -> Set<String> {
                Set(try await env.listAll(filter).map { "\($0.id.namespace)/\($0.id.key)" })
            }
            let lateAlpha: Set<String> = [
                "alpha/order-4", "alpha/refund-1", "alpha/a%b", "alpha/a_b", "alpha/axb", "alpha/a*b", "alpha/a[b]",
                "alpha/ab",
            ]
            let earlyAlpha: Set<String> = ["alpha/order-1", "alpha/order-2", "alpha/order-3"]
            try expectEqual(
                try await keys(RecordFilter(namespace: "alpha")),
                earlyAlpha.union(lateAlpha),
                "namespace alpha"
            )
            try expectEqual(try await keys(RecordFilter(namespace: "beta")), ["beta/order-1"], "namespace beta")
            try expectEqual(
                try await keys(RecordFilter(state: .inFlight)),
                ["alpha/order-3", "alpha/refund-1"],
                "state in flight"
            )
            try expectEqual(
                try await keys(RecordFilter(namespace: "alpha", state: .completed)),
                earlyAlpha.union(lateAlpha).subtracting(["alpha/order-3", "alpha/refund-1"]),
                "namespace alpha, completed"
            )
            try expectEqual(
                try await keys(RecordFilter(namespace: "alpha", keyPrefix: "order-")),
                ["alpha/order-1", "alpha/order-2", "alpha/order-3", "alpha/order-4"],
                "prefix order-"
            )
            try expectEqual(
                try await keys(RecordFilter(keyPrefix: "order-1")),
                ["alpha/order-1", "beta/order-1"],
                "prefix order-1 in all namespaces"
            )
            try expectEqual(try await keys(RecordFilter(keyPrefix: "a%")), ["alpha/a%b"], "prefix a% (literal %)")
            try expectEqual(try await keys(RecordFilter(keyPrefix: "a_")), ["alpha/a_b"], "prefix a_ (literal _)")
            try expectEqual(try await keys(RecordFilter(keyPrefix: "a*")), ["alpha/a*b"], "prefix a* (literal *)")
            try expectEqual(try await keys(RecordFilter(keyPrefix: "a[")), ["alpha/a[b]"], "prefix a[ (literal [)")
            try expectEqual(
                try await keys(RecordFilter(keyPrefix: "a")),
                ["alpha/a%b", "alpha/a_b", "alpha/axb", "alpha/a*b", "alpha/a[b]", "alpha/ab"],
                "prefix a"
            )
            try expectEqual(
                try await keys(RecordFilter(namespace: "alpha", from: late)),
                lateAlpha,
                "from the late records' time"
            )
            try expectEqual(
                try await keys(RecordFilter(until: late)),
                earlyAlpha.union(["beta/order-1"]),
                "until the late records' time (exclusive)"
            )
            try expectEqual(
                try await keys(RecordFilter(namespace: "alpha", state: .completed, from: late, keyPrefix: "order-")),
                ["alpha/order-4"],
                "namespace, state, time and prefix together"
            )
            try expectEqual(try await keys(RecordFilter(namespace: "gamma")), [], "an unknown namespace")
        },

        ConformanceCheck(
            "delete removes only the listed ids whose live record still matches the filter, counting each once"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            func id(_ key: String, _ namespace: String = "del") throws -> RecordID { try env.id(key, in: namespace) }
            try await env.acquireAndComplete(id("old"), retention: env.longLease)
            try await env.acquireAndComplete(id("expiring"), retention: env.unit)
            try await env.advance(units: 2)
            for key in ["c1", "c2", "c3"] { try await env.acquireAndComplete(id(key), retention: env.longLease) }
            try await env.acquireAndComplete(id("c1", "keep"), retention: env.longLease)
            _ = try await env.acquire(id("f1"), lease: env.longLease, retention: env.longLease)
            let late = try await env.existingRecord(id("c1")).recordTime

            let completedInDel = RecordFilter(namespace: "del", state: .completed)
            let deleted = try await env.store.delete(
                [id("c1"), id("f1"), id("absent"), id("c2"), id("c1"), id("c1", "keep"), id("expiring")],
                matching: completedInDel
            )
            try expectEqual(deleted, 2, "deleted (c1 and c2; c1 listed twice counts once)")
            try expectEqual(try await env.store.record(for: id("c1")), nil, "c1 after delete")
            try expectEqual(try await env.store.record(for: id("c2")), nil, "c2 after delete")
            try expect(
                try await env.store.record(for: id("f1")) != nil,
                "f1 (in flight) must survive a delete of completed records"
            )
            try expect(
                try await env.store.record(for: id("c1", "keep")) != nil,
                "keep/c1 must survive a delete in namespace del"
            )
            try expect(try await env.store.record(for: id("c3")) != nil, "c3 was not listed and must survive")
            try expectEqual(try await env.store.record(for: id("absent")), nil, "an absent id is not created by delete")

            try expectEqual(
                try await env.store.delete([id("c3")], matching: RecordFilter(state: .inFlight)),
                0,
                "deleting c3 as in flight"
            )
            try expect(try await env.store.record(for: id("c3")) != nil, "c3 after a non-matching delete")
            // A reset: completed records of a namespace from a time on.
            try expectEqual(
                try await env.store.delete(
                    [id("old"), id("c3")],
                    matching: RecordFilter(namespace: "del", state: .completed, from: late)
                ),
                1,
                "deleted by a time range"
            )
            try expect(try await env.store.record(for: id("old")) != nil, "a record older than the range must survive")
            try expectEqual(try await env.store.record(for: id("c3")), nil, "c3 in the range")
            try expectEqual(
                try await env.store.delete([id("f1")], matching: RecordFilter()),
                1,
                "deleting f1 with an empty filter"
            )
            try expectEqual(try await env.store.delete([], matching: RecordFilter()), 0, "deleting no ids")
        },

        ConformanceCheck("forget deletes one record in any state and says whether there was one") { harness in
            let env = try await ConformanceEnvironment(harness)
            let inFlight = try env.id("forget-in-flight")
            let completed = try env.id("forget-completed")
            let lease = try await env.acquire(inFlight)
            try await env.acquireAndComplete(completed)
            try expect(try await env.store.forget(inFlight), "forget of an in-flight record")
            try expect(try await env.store.forget(completed), "forget of a completed record")
            try expect(
                !(try await env.store.forget(env.id("forget-absent"))),
                "forget of an absent record must say false"
            )
            try expect(!(try await env.store.forget(inFlight)), "a second forget must say false")
            try expectEqual(try await env.store.record(for: completed), nil, "record after forget")
            try await expectLeaseLost("complete after forget") {
                try await env.store.complete(Completion(lease: lease, retention: env.retention))
            }
            let fresh = try await env.acquire(completed, "the claim after forgetting a completed record")
            try expectEqual(fresh.fencingToken, 1, "fencing token after forget")
        },

        ConformanceCheck(
            "purgeExpired deletes only expired records, at most limit per call, and never a live one (abandoned claims awaiting takeover included)"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            for index in 0..<5 { try await env.acquireAndComplete(env.id("done-\(index)"), retention: env.unit) }
            for index in 0..<3 {
                _ = try await env.acquire(env.id("abandoned-\(index)"), lease: env.unit, retention: env.unit)
            }
            var live: [RecordID] = []
            for index in 0..<3 {
                let id = try env.id("kept-\(index)")
                try await env.acquireAndComplete(id, retention: env.longLease)
                live.append(id)
            }
            let running = try env.id("running")
            _ = try await env.acquire(running, lease: env.longLease, retention: env.longLease)
            let awaitingTakeover = try env.id("awaiting-takeover")
            _ = try await env.acquire(awaitingTakeover, lease: env.unit, retention: env.longLease)
            live += [running, awaitingTakeover]
            var snapshots: [DedupRecord] = []
            for id in live { snapshots.append(try await env.existingRecord(id)) }
            try await env.advance(units: 3)

            if harness.expiresRecordsAutomatically {
                var total = 0
                for _ in 0..<20 {
                    let purged = try await env.store.purgeExpired(limit: 5)
                    try expect((0...5).contains(purged), "purgeExpired(limit: 5) returned \(purged)")
                    total += purged
                    if purged == 0 { break }
                }
                try expect(total <= 8, "purged \(total) records; only 8 had expired")
            } else {
                try expectEqual(try await env.store.purgeExpired(limit: 5), 5, "first purge, limit 5, of 8 expired")
                try expectEqual(try await env.store.purgeExpired(limit: 5), 3, "second purge")
                try expectEqual(try await env.store.purgeExpired(limit: 5), 0, "third purge")
            }
            for (id, snapshot) in zip(live, snapshots) {
                try expectEqual(try await env.store.record(for: id), snapshot, "live record \(id) after purging")
            }
            try expectEqual(try await env.store.stats().total, live.count, "records left")
            _ = try await env.acquire(awaitingTakeover, takeover: true, "the abandoned claim kept through the purge")
        },

        ConformanceCheck(
            "stats counts live records per namespace (in flight, passed leases, completed) with the oldest and newest record times"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            func id(_ key: String, _ namespace: String) throws -> RecordID { try env.id(key, in: namespace) }
            try expectEqual(try await env.store.stats(), DedupStats(namespaces: []), "stats of an empty store")
            try await env.acquireAndComplete(id("a1", "a"), retention: env.longLease)
            try await env.acquireAndComplete(id("c1", "c"), retention: env.unit)
            try await env.advance(units: 2)
            _ = try await env.acquire(id("a2", "a"), lease: env.unit, retention: env.longLease)
            _ = try await env.acquire(id("a3", "a"), lease: env.longLease, retention: env.longLease)
            try await env.acquireAndComplete(id("a4", "a"), retention: env.longLease)
            try await env.acquireAndComplete(id("b1", "b"), retention: env.longLease)
            try await env.advance(units: 2)

            let stats = try await env.store.stats()
            try expectEqual(stats.namespaces.map(\.namespace), ["a", "b"], "namespaces (c expired; sorted)")
            try expectEqual(stats.total, 5, "total")
            var times: [Date] = []
            for key in ["a1", "a2", "a3", "a4"] { times.append(try await env.existingRecord(id(key, "a")).recordTime) }
            let a = stats.namespaces[0]
            try expectEqual(a.inFlight, 2, "a: in flight (a passed lease included)")
            try expectEqual(a.expiredLeases, 1, "a: passed leases")
            try expectEqual(a.completed, 2, "a: completed")
            try expectEqual(a.oldest, times.min(), "a: oldest record time")
            try expectEqual(a.newest, times.max(), "a: newest record time")
            let b = stats.namespaces[1]
            let bTime = try await env.existingRecord(id("b1", "b")).recordTime
            try expectEqual(
                DedupStats.NamespaceStats(
                    namespace: "b",
                    inFlight: 0,
                    expiredLeases: 0,
                    completed: 1,
                    oldest: bTime,
                    newest: bTime
                ),
                b,
                "b"
            )
        },
    ]
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - count)) + self
    }
}
