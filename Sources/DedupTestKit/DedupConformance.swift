import Dedup
import Foundation

/// The store contract as executable checks: every rule of the store contract (see the Dedup
/// documentation's “The store contract” article) and the store semantics, written once and run
/// against every store (in-memory, SQLite, Redis, and any third-party store).
///
/// Each check makes its own stores through a ``ConformanceHarness``, builds leases and retentions from
/// the harness's ``ConformanceHarness/timeUnit`` (lease 3 units, retention 100 units unless a check
/// says otherwise) and moves time only through ``ConformanceHarness/advance(by:)``. So the same
/// checks run on a manual clock (unit 1 s, exact) and on a real server clock (unit about 100 ms, where
/// they assert "at least one unit before" and "at least one unit after" a boundary instead of exact
/// milliseconds).
///
/// Run one test per check, so a failure names the rule:
///
/// ```swift
/// @Test(arguments: DedupConformance.checks)          // a harness on a ManualDedupClock
/// func conforms(_ check: ConformanceCheck) async throws {
///     try await check.run(MyHarness())
/// }
/// ```
///
/// A harness on a real clock runs ``checks(manualClock:)`` with `false`, which leaves out the
/// exact-boundary checks.
public enum DedupConformance {
    /// Every check, the exact-boundary ones (``ConformanceCheck/needsManualClock``) included.
    public static let checks: [ConformanceCheck] =
        claimChecks + ownershipChecks + fingerprintChecks + batchChecks + raceChecks + identityChecks
        + inspectionChecks + ownerLabelChecks + brokerTimeChecks

    /// The checks a harness can run: all of them on a manual clock, all but the exact-boundary ones
    /// on a real clock.
    public static func checks(manualClock: Bool) -> [ConformanceCheck] {
        manualClock ? checks : checks.filter { !$0.needsManualClock }
    }

    /// The check with this name, for running one rule on its own; `nil` if there is none.
    public static func check(named name: String) -> ConformanceCheck? {
        checks.first { $0.name == name }
    }
}

// MARK: - Claims, leases and retention

extension DedupConformance {
    static let claimChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "claiming an absent key acquires it: the caller's token, fencing 1, attempt 1, lease and retention counted from now"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-1")
            let token = Lease.makeOwnerToken()
            let lease = try await env.acquire(id, token: token, fingerprint: "fp-1", "first claim")
            try expectSameBytes(lease.id, id, "lease id")
            try expectEqual(lease.fencingToken, 1, "fencing token of a first acquisition")
            try expectEqual(lease.attempt, 1, "attempt of a first acquisition")
            let record = try await env.existingRecord(id)
            try expectSameBytes(record.id, id, "record id")
            try expectEqual(record.state, .inFlight, "state after a claim")
            try expectEqual(record.ownerToken, token, "owner token of the record")
            try expectEqual(record.fencingToken, 1, "record fencing token")
            try expectEqual(record.attempt, 1, "record attempt")
            try env.expectLeaseEnd(lease, matches: record, "record leaseUntil vs the lease's")
            if let claimedAt = lease.claimedAt {
                try env.expectSameOrMomentEarlier(
                    claimedAt,
                    than: record.createdAt,
                    "the lease's claimedAt vs the record's createdAt"
                )
            }
            try expectEqual(record.completedAt, nil, "completedAt while in flight")
            try expectEqual(record.result, nil, "result while in flight")
            try expectEqual(record.fingerprint, "fp-1", "fingerprint kept from the request")
            try expectEqual(record.recordTime, record.createdAt, "recordTime of an in-flight record")
            let leaseUntil = try unwrap(record.leaseUntil, "no leaseUntil on an in-flight record")
            // One clock read per operation: lease and expiry are exact offsets from createdAt.
            try expectEqual(
                leaseUntil.millisecondsSince1970 - record.createdAt.millisecondsSince1970,
                env.lease.wholeMilliseconds,
                "leaseUntil - createdAt (the lease)"
            )
            try expectEqual(
                record.expiresAt.millisecondsSince1970 - leaseUntil.millisecondsSince1970,
                env.retention.wholeMilliseconds,
                "expiresAt - leaseUntil (the retention)"
            )
        },

        ConformanceCheck(
            "a key in flight under a live lease answers inFlight with the holder's record and stays unchanged"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-2")
            let deadline = env.deadline(in: env.lease)
            let holder = try await env.acquire(id)
            let before = try await env.existingRecord(id)
            try await env.advance(units: 1)
            let answer = try await env.claim(id)
            let reported = try await env.beforeDeadline(deadline) {
                try expectInFlight(answer, "a second claim during the lease")
            }
            try expectEqual(reported, before, "the record an inFlight answer reports")
            try expectEqual(reported.ownerToken, holder.ownerToken, "owner in the inFlight answer")
            try expectEqual(try await env.existingRecord(id), before, "record after an inFlight answer")
        },

        ConformanceCheck(
            "a claim after the lease passed takes over: the new owner, fencing and attempt up by one, createdAt kept, lease and retention from now"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-3")
            let first = try await env.acquire(id)
            let before = try await env.existingRecord(id)
            try await env.advance(units: 4)
            let token = Lease.makeOwnerToken()
            let second = try await env.acquire(id, token: token, takeover: true, "claim after the lease passed")
            try expectEqual(second.fencingToken, first.fencingToken + 1, "fencing token after a takeover")
            try expectEqual(second.attempt, 2, "attempt after a takeover")
            let after = try await env.existingRecord(id)
            try expectEqual(after.state, .inFlight, "state after a takeover")
            try expectEqual(after.ownerToken, token, "owner after a takeover")
            try expectEqual(after.fencingToken, second.fencingToken, "record fencing token after a takeover")
            try expectEqual(after.attempt, 2, "record attempt after a takeover")
            try expectEqual(after.createdAt, before.createdAt, "createdAt across a takeover")
            if let claimedAt = second.claimedAt {
                try expectEqual(claimedAt, after.createdAt, "the taking-over lease's claimedAt (the first claim's)")
            }
            try env.expectLeaseEnd(second, matches: after, "record leaseUntil vs the new lease's")
            let leaseUntil = try unwrap(after.leaseUntil, "no leaseUntil after a takeover")
            try env.expectElapsed(
                from: before.createdAt,
                to: leaseUntil,
                env.units(4) + env.lease,
                "new leaseUntil - createdAt (4 units waited + the lease)"
            )
            try expectEqual(
                after.expiresAt.millisecondsSince1970 - leaseUntil.millisecondsSince1970,
                env.retention.wholeMilliseconds,
                "expiresAt - leaseUntil after a takeover"
            )
        },

        ConformanceCheck("fencing tokens strictly increase and attempts count up across successive takeovers") {
            harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-4")
            var previous = try await env.acquire(id)
            for round in 2...6 {
                try await env.advance(units: 4)
                let next = try await env.acquire(id, takeover: true, "takeover \(round)")
                try expect(
                    next.fencingToken > previous.fencingToken,
                    "takeover \(round): fencing \(next.fencingToken) is not above \(previous.fencingToken)"
                )
                try expectEqual(next.attempt, round, "attempt of takeover \(round)")
                previous = next
            }
            try await env.store.complete(Completion(lease: previous, retention: env.retention))
            let record = try await env.existingRecord(id)
            try expectEqual(record.fencingToken, previous.fencingToken, "fencing token kept by the completion")
            try expectEqual(record.attempt, 6, "attempt kept by the completion")
        },

        ConformanceCheck("one unit before the lease ends the key is in flight; one unit after, it is taken over") {
            harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-5")
            let deadline = env.deadline(in: env.lease)
            _ = try await env.acquire(id)
            try await env.advance(units: 2)
            let early = try await env.claim(id)
            _ = try await env.beforeDeadline(deadline) {
                try expectInFlight(early, "a claim one unit before the lease ends")
            }
            try await env.advance(units: 2)
            _ = try await env.acquire(id, takeover: true, "a claim one unit after the lease ended")
        },

        ConformanceCheck(
            "at exactly leaseUntil a claim takes over; one millisecond earlier the key is in flight",
            needsManualClock: true
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-6")
            _ = try await env.acquire(id)
            try await env.advance(by: env.lease - .milliseconds(1))
            try expectEqual(
                try await env.store.stats().namespaces.first?.expiredLeases,
                0,
                "passed leases in stats at leaseUntil - 1 ms"
            )
            _ = try expectInFlight(try await env.claim(id), "a claim at leaseUntil - 1 ms")
            try await env.advance(by: .milliseconds(1))
            try expectEqual(
                try await env.store.stats().namespaces.first?.expiredLeases,
                1,
                "passed leases in stats at exactly leaseUntil"
            )
            _ = try await env.acquire(id, takeover: true, "a claim at exactly leaseUntil")
        },

        ConformanceCheck(
            "a completed key is a duplicate carrying completedAt, expiresAt = completedAt + the completion's retention, and the result"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-7")
            let lease = try await env.acquire(id, fingerprint: "fp-7")
            let claimed = try await env.existingRecord(id)
            try await env.advance(units: 1)
            let result = Data("receipt-7".utf8)
            // The completion's retention (200 units) differs from the claim's (100) to show which is used.
            try await env.store.complete(Completion(lease: lease, retention: env.units(200), result: result))
            let duplicate = try expectDuplicate(
                try await env.claim(id, fingerprint: "fp-7"),
                "a claim after completion"
            )
            try expectEqual(duplicate.state, .completed, "state")
            try expectEqual(duplicate.ownerToken, nil, "owner token of a completed record")
            try expectEqual(duplicate.leaseUntil, nil, "leaseUntil of a completed record")
            try expectEqual(duplicate.result, result, "stored result")
            try expectEqual(duplicate.fencingToken, lease.fencingToken, "fencing token kept")
            try expectEqual(duplicate.attempt, 1, "attempt kept")
            // A store may keep the first claim's time as the lease reported it.
            try expect(
                duplicate.createdAt == claimed.createdAt || duplicate.createdAt == lease.claimedAt,
                "createdAt kept: \(duplicate.createdAt), claimed at \(claimed.createdAt), the lease says \(String(describing: lease.claimedAt))"
            )
            try expectEqual(duplicate.fingerprint, "fp-7", "fingerprint kept")
            let completedAt = try unwrap(duplicate.completedAt, "a completed record has no completedAt")
            try expectEqual(duplicate.recordTime, completedAt, "recordTime of a completed record")
            try env.expectElapsed(from: claimed.createdAt, to: completedAt, env.unit, "completedAt - createdAt")
            try expectEqual(
                duplicate.expiresAt.millisecondsSince1970 - completedAt.millisecondsSince1970,
                env.units(200).wholeMilliseconds,
                "expiresAt - completedAt (the completion's retention)"
            )
            try expectEqual(try await env.existingRecord(id), duplicate, "record(for:) vs the duplicate answer")
            let again = try expectDuplicate(try await env.claim(id), "a second duplicate claim")
            try expectEqual(again, duplicate, "a duplicate claim leaves the record unchanged")
        },

        ConformanceCheck(
            "a completion by a lease that does not say when its record was first claimed keeps the record's createdAt"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-8")
            var lease = try await env.acquire(id)
            let claimed = try await env.existingRecord(id)
            lease.claimedAt = nil  // as a lease made by hand, or by a store that does not report it
            try await env.advance(units: 1)
            try await env.store.complete(Completion(lease: lease, retention: env.retention))
            let duplicate = try expectDuplicate(try await env.claim(id), "a claim after completion")
            try expectEqual(duplicate.createdAt, claimed.createdAt, "createdAt kept")
        },

        ConformanceCheck(
            "stored results round-trip byte for byte: empty (not nil), every byte value, NUL and invalid UTF-8, 64 KiB, and none"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let results: [(String, Data?)] = [
                ("empty", Data()),
                ("all-bytes", Data((0...255).map { UInt8($0) })),
                ("binary", Data([0x00, 0xFF, 0xFE, 0x0D, 0x0A, 0x00, 0x80, 0xC3, 0x28, 0x24, 0x2D, 0x31, 0x0D, 0x0A])),
                ("nul", Data([0x00])),
                ("large", patternBytes(count: 64 * 1024, seed: 7)),
                ("none", nil),
            ]
            for (key, result) in results {
                try await env.acquireAndComplete(env.id("result-\(key)"), result: result)
            }
            for (key, result) in results {
                let id = try env.id("result-\(key)")
                let record = try expectDuplicate(try await env.claim(id), "claim of \(key)")
                try expectEqual(record.result, result, "result \(key) in the duplicate answer")
                try expectEqual(try await env.existingRecord(id).result, result, "result \(key) from record(for:)")
            }
            let listed = try await env.listAll(RecordFilter(keyPrefix: "result-"))
            try expectEqual(listed.count, results.count, "records listed")
            for record in listed {
                let expected = results.first { "result-\($0.0)" == record.id.key }?.1
                try expectEqual(record.result, expected, "result of \(record.id) in a listing")
            }
        },

        ConformanceCheck(
            "one unit before a completed record expires it is a duplicate; one unit after, the key is acquired afresh"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("order-8")
            let deadline = env.deadline(in: env.units(3))
            try await env.acquireAndComplete(id, retention: env.units(3))
            try await env.advance(units: 2)
            let early = try await env.claim(id)
            _ = try await env.beforeDeadline(deadline) { try expectDuplicate(early, "a claim one unit before expiry") }
            try await env.advance(units: 2)
            let fresh = try await env.acquire(id, "a claim one unit after expiry")
            try expectEqual(fresh.fencingToken, 1, "fencing token of a fresh record after expiry")
            try expectEqual(fresh.attempt, 1, "attempt of a fresh record after expiry")
        },

        ConformanceCheck(
            "at exactly expiresAt a record is gone (completed and abandoned alike); one millisecond earlier it is still there",
            needsManualClock: true
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let done = try env.id("order-9")
            let takenOver = try env.id("order-10")
            let abandoned = try env.id("order-11")
            try await env.acquireAndComplete(done, retention: env.units(3))
            // Abandoned claims: they expire at leaseUntil + retention = 1 + 2 units.
            _ = try await env.acquire(takenOver, lease: env.unit, retention: env.units(2))
            _ = try await env.acquire(abandoned, lease: env.unit, retention: env.units(2))
            try await env.advance(by: env.units(3) - .milliseconds(1))
            _ = try expectDuplicate(try await env.claim(done), "a completed key at expiresAt - 1 ms")
            let takeover = try await env.acquire(takenOver, takeover: true, "an abandoned key at expiresAt - 1 ms")
            try expectEqual(takeover.fencingToken, 2, "fencing token of a takeover just before expiry")
            try await env.advance(by: .milliseconds(1))
            let fresh = try await env.acquire(done, "a completed key at exactly expiresAt")
            try expectEqual(fresh.fencingToken, 1, "fencing token of a fresh record after a completed one expired")
            let restarted = try await env.acquire(abandoned, "an abandoned key at exactly expiresAt")
            try expectEqual(restarted.fencingToken, 1, "fencing token of a fresh record after an abandoned one expired")
            try expectEqual(restarted.attempt, 1, "attempt of a fresh record after an abandoned one expired")
        },

        ConformanceCheck(
            "an expired record is absent everywhere: record(for:), listing, stats, and complete, renew and release of its lease"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let done = try env.id("gone-done")
            let abandoned = try env.id("gone-abandoned")
            let live = try env.id("live")
            try expectEqual(
                try await env.store.record(for: try env.id("never")),
                nil,
                "record(for:) of a key never claimed"
            )
            try await env.acquireAndComplete(done, retention: env.units(2))
            let abandonedLease = try await env.acquire(abandoned, lease: env.unit, retention: env.unit)
            _ = try await env.acquire(live, lease: env.longLease, retention: env.longLease)
            try await env.advance(units: 3)
            try expectEqual(try await env.store.record(for: done), nil, "record(for:) of an expired completed record")
            try expectEqual(
                try await env.store.record(for: abandoned),
                nil,
                "record(for:) of an expired abandoned claim"
            )
            try expectEqual(try await env.listedIdentities(RecordFilter()), [IdentityBytes(live)], "identities listed")
            try expectEqual(try await env.store.stats().total, 1, "records counted by stats")
            try await expectLeaseLost("complete of an expired claim") {
                try await env.store.complete(Completion(lease: abandonedLease, retention: env.retention))
            }
            try await expectLeaseLost("renew of an expired claim") {
                _ = try await env.store.renew(abandonedLease, for: env.lease)
            }
            try await expectLeaseLost("release of an expired claim") { try await env.store.release(abandonedLease) }
            try expectEqual(try await env.store.record(for: abandoned), nil, "the expired claim after refused writes")
            let fresh = try await env.acquire(abandoned, "a claim of the expired abandoned key")
            try expectEqual(fresh.fencingToken, 1, "fencing token of a fresh record")
            try expectEqual(fresh.attempt, 1, "attempt of a fresh record")
        },
    ]
}
