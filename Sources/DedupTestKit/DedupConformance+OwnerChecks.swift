import Dedup
import Foundation

// MARK: - Owner-checked writes

extension DedupConformance {
    static let ownershipChecks: [ConformanceCheck] = [
        ConformanceCheck("complete after the lease passed succeeds while nobody took over") { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("late-complete")
            let lease = try await env.acquire(id)
            try await env.advance(units: 4)
            try await env.store.complete(Completion(lease: lease, retention: env.retention, result: Data("late".utf8)))
            let record = try expectDuplicate(try await env.claim(id), "a claim after the late completion")
            try expectEqual(record.attempt, 1, "attempt")
            try expectEqual(record.fencingToken, 1, "fencing token")
            try expectEqual(record.result, Data("late".utf8), "result")
        },

        ConformanceCheck("renew after the lease passed succeeds while nobody took over, and then fends off a takeover")
        { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("late-renew")
            let lease = try await env.acquire(id)
            try await env.advance(units: 4)
            let deadline = env.deadline(in: env.lease)
            let renewed = try await env.store.renew(lease, for: env.lease)
            try expect(renewed.leaseUntil > lease.leaseUntil, "renew must move leaseUntil later")
            let record = try await env.existingRecord(id)
            try expectEqual(record.leaseUntil, renewed.leaseUntil, "record leaseUntil after renew")
            try expectEqual(record.ownerToken, lease.ownerToken, "owner after renew")
            let answer = try await env.claim(id)
            _ = try await env.beforeDeadline(deadline) { try expectInFlight(answer, "a claim after the renewal") }
        },

        ConformanceCheck(
            "renew extends the lease from now keeping the retention gap, and a renewed claim is not taken over at its first lease end"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("renew")
            let lease = try await env.acquire(id)
            try await env.advance(units: 2)
            let deadline = env.deadline(in: env.lease)
            let renewed = try await env.store.renew(lease, for: env.lease)
            try expectEqual(renewed.ownerToken, lease.ownerToken, "owner token of the renewed lease")
            try expectEqual(renewed.fencingToken, lease.fencingToken, "fencing token of the renewed lease")
            try expectEqual(renewed.attempt, lease.attempt, "attempt of the renewed lease")
            try expectSameBytes(renewed.id, lease.id, "id of the renewed lease")
            try expectEqual(renewed.claimedAt, lease.claimedAt, "claimedAt of the renewed lease (the first claim's)")
            try env.expectElapsed(
                from: lease.leaseUntil,
                to: renewed.leaseUntil,
                env.units(2),
                "renewed leaseUntil - first leaseUntil"
            )
            let record = try await env.existingRecord(id)
            try expectEqual(record.leaseUntil, renewed.leaseUntil, "record leaseUntil after renew")
            try expectEqual(
                record.expiresAt.millisecondsSince1970 - renewed.leaseUntil.millisecondsSince1970,
                env.retention.wholeMilliseconds,
                "expiresAt - leaseUntil after renew"
            )
            try await env.advance(units: 2)  // past the first lease end, before the renewed one
            let answer = try await env.claim(id)
            _ = try await env.beforeDeadline(deadline) {
                try expectInFlight(answer, "a claim past the first lease end of a renewed claim")
            }
            try await env.advance(units: 2)  // past the renewed lease end
            let takeover = try await env.acquire(id, takeover: true, "a claim past the renewed lease end")
            try expectEqual(takeover.fencingToken, 2, "fencing token of the takeover")
        },

        ConformanceCheck(
            "a stale owner's complete, release and renew after a takeover throw leaseLost and change nothing"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("stale")
            let stale = try await env.acquire(id)
            try await env.advance(units: 4)
            let current = try await env.acquire(id, takeover: true)
            let snapshot = try await env.existingRecord(id)
            try await expectLeaseLost("complete by the stale owner") {
                try await env.store.complete(
                    Completion(lease: stale, retention: env.retention, result: Data("stale".utf8))
                )
            }
            try expectEqual(try await env.existingRecord(id), snapshot, "record after the stale complete")
            try await expectLeaseLost("release by the stale owner") { try await env.store.release(stale) }
            try expectEqual(try await env.existingRecord(id), snapshot, "record after the stale release")
            try await expectLeaseLost("renew by the stale owner") {
                _ = try await env.store.renew(stale, for: env.longLease)
            }
            try expectEqual(try await env.existingRecord(id), snapshot, "record after the stale renew")
            let outcomes = try await env.store.complete(batch: [Completion(lease: stale, retention: env.retention)])
            try expectEqual(outcomes, [.leaseLost], "batch complete by the stale owner")
            try expectEqual(try await env.existingRecord(id), snapshot, "record after the stale batch complete")
            try await env.store.complete(
                Completion(lease: current, retention: env.retention, result: Data("current".utf8))
            )
            let done = try await env.existingRecord(id)
            try expectEqual(done.result, Data("current".utf8), "the current owner's result")
            try expectEqual(done.fencingToken, current.fencingToken, "fencing token of the completion")
        },

        ConformanceCheck(
            "once completed, the owner's own complete, release and renew throw leaseLost and change nothing"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("done")
            let lease = try await env.acquireAndComplete(id, result: Data("first".utf8))
            let snapshot = try await env.existingRecord(id)
            try await expectLeaseLost("a second complete") {
                try await env.store.complete(
                    Completion(lease: lease, retention: env.longLease, result: Data("second".utf8))
                )
            }
            try await expectLeaseLost("release after complete") { try await env.store.release(lease) }
            try await expectLeaseLost("renew after complete") { _ = try await env.store.renew(lease, for: env.lease) }
            try expectEqual(try await env.existingRecord(id), snapshot, "record after refused writes")
        },

        ConformanceCheck("a lease on an absent, released or forgotten key is lost, and refused writes create no record")
        { harness in
            let env = try await ConformanceEnvironment(harness)
            let absent = try env.id("absent")
            let phantom = Lease(
                id: absent,
                ownerToken: Lease.makeOwnerToken(),
                fencingToken: 1,
                attempt: 1,
                leaseUntil: Date(millisecondsSince1970: Int64.max / 2),
                isTakeover: false
            )
            try await expectLeaseLost("complete of a key never claimed") {
                try await env.store.complete(Completion(lease: phantom, retention: env.retention))
            }
            try await expectLeaseLost("renew of a key never claimed") {
                _ = try await env.store.renew(phantom, for: env.lease)
            }
            try await expectLeaseLost("release of a key never claimed") { try await env.store.release(phantom) }
            try expectEqual(try await env.store.record(for: absent), nil, "record of a key never claimed")

            let released = try env.id("released")
            let lease = try await env.acquire(released)
            try await env.store.release(lease)
            try await expectLeaseLost("a second release") { try await env.store.release(lease) }
            try await expectLeaseLost("complete after release") {
                try await env.store.complete(Completion(lease: lease, retention: env.retention))
            }
            try await expectLeaseLost("renew after release") { _ = try await env.store.renew(lease, for: env.lease) }
            try expectEqual(try await env.store.record(for: released), nil, "record after writes to a released key")

            let forgotten = try env.id("forgotten")
            let forgottenLease = try await env.acquire(forgotten)
            try expect(try await env.store.forget(forgotten), "forget of an in-flight record must report it deleted")
            try await expectLeaseLost("complete after forget") {
                try await env.store.complete(Completion(lease: forgottenLease, retention: env.retention))
            }
            try expectEqual(try await env.store.record(for: forgotten), nil, "record after complete of a forgotten key")
        },

        ConformanceCheck("release deletes the claim, so the next claim acquires afresh") { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("release")
            let lease = try await env.acquire(id)
            try await env.store.release(lease)
            try expectEqual(try await env.store.record(for: id), nil, "record after release")
            let next = try await env.acquire(id, "the claim after a release")
            try expectEqual(next.fencingToken, 1, "fencing token after release (no record was left)")
            try expectEqual(next.attempt, 1, "attempt after release")
        },
    ]
}

// MARK: - Payload fingerprints

extension DedupConformance {
    static let fingerprintChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "a different payload fingerprint is a mismatch, in flight (lease live or passed) and completed, and the record is unchanged"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("payment-1")
            let deadline = env.deadline(in: env.lease)
            let holder = try await env.acquire(id, fingerprint: "sha:aaa")
            var snapshot = try await env.existingRecord(id)
            var reported = try expectMismatch(
                try await env.claim(id, fingerprint: "sha:bbb"),
                "a different fingerprint in flight"
            )
            try expectEqual(reported, snapshot, "the record a mismatch reports")
            try expectEqual(reported.fingerprint, "sha:aaa", "fingerprint reported")
            try expectEqual(try await env.existingRecord(id), snapshot, "record after a mismatch")
            let same = try await env.claim(id, fingerprint: "sha:aaa")
            _ = try await env.beforeDeadline(deadline) { try expectInFlight(same, "the same fingerprint in flight") }

            try await env.advance(units: 4)
            _ = try expectMismatch(
                try await env.claim(id, fingerprint: "sha:bbb"),
                "a different fingerprint after the lease passed"
            )
            try expectEqual(
                try await env.existingRecord(id),
                snapshot,
                "record after a mismatch past the lease (no takeover)"
            )
            try await env.store.complete(Completion(lease: holder, retention: env.retention))

            snapshot = try await env.existingRecord(id)
            reported = try expectMismatch(
                try await env.claim(id, fingerprint: "sha:bbb"),
                "a different fingerprint once completed"
            )
            try expectEqual(reported, snapshot, "the completed record a mismatch reports")
            try expectEqual(try await env.existingRecord(id), snapshot, "record after a mismatch once completed")
            _ = try expectDuplicate(
                try await env.claim(id, fingerprint: "sha:aaa"),
                "the same fingerprint once completed"
            )
        },

        ConformanceCheck(
            "nil fingerprints never mismatch, and a takeover fills in a missing fingerprint but never replaces one"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let unprinted = try env.id("fp-none")
            let printed = try env.id("fp-some")
            let fillIn = try env.id("fp-fill")
            let keep = try env.id("fp-keep")
            let deadline = env.deadline(in: env.lease)
            let unprintedLease = try await env.acquire(unprinted)
            let printedLease = try await env.acquire(printed, fingerprint: "A")
            _ = try await env.acquire(fillIn)
            _ = try await env.acquire(keep, fingerprint: "A")
            let printedOnUnprinted = try await env.claim(unprinted, fingerprint: "X")
            let unprintedOnPrinted = try await env.claim(printed)
            try await env.beforeDeadline(deadline) {
                _ = try expectInFlight(printedOnUnprinted, "a fingerprinted claim of an unprinted record")
                _ = try expectInFlight(unprintedOnPrinted, "an unprinted claim of a fingerprinted record")
            }
            try await env.store.complete(Completion(lease: unprintedLease, retention: env.longLease))
            try await env.store.complete(Completion(lease: printedLease, retention: env.longLease))
            _ = try expectDuplicate(
                try await env.claim(unprinted, fingerprint: "X"),
                "a fingerprinted claim of a completed unprinted record"
            )
            _ = try expectDuplicate(
                try await env.claim(unprinted),
                "an unprinted claim of a completed unprinted record"
            )
            _ = try expectDuplicate(
                try await env.claim(printed),
                "an unprinted claim of a completed fingerprinted record"
            )

            try await env.advance(units: 4)
            _ = try await env.acquire(fillIn, fingerprint: "Y", takeover: true, "a fingerprinted takeover")
            try expectEqual(
                try await env.existingRecord(fillIn).fingerprint,
                "Y",
                "fingerprint filled in by the takeover"
            )
            _ = try await env.acquire(keep, takeover: true, "an unprinted takeover")
            try expectEqual(
                try await env.existingRecord(keep).fingerprint,
                "A",
                "fingerprint kept across an unprinted takeover"
            )
            _ = try expectMismatch(
                try await env.claim(fillIn, fingerprint: "Z"),
                "a different fingerprint after the fill-in"
            )
            _ = try expectMismatch(
                try await env.claim(keep, fingerprint: "B"),
                "a different fingerprint after the unprinted takeover"
            )
        },
    ]
}
