import Dedup
import Foundation

// MARK: - Batches

extension DedupConformance {
    static let batchChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "a batch claim gives exactly the answers of one-by-one claims in order: new, duplicate, in flight, takeover, mismatch, gone after expiry, and the same key twice"
        ) { harness in
            let batchEnv = try await ConformanceEnvironment(harness)
            let singleEnv = ConformanceEnvironment(harness, store: try await harness.makeStore())
            // The same tokens in both stores, so answers compare exactly.
            let staleToken = Lease.makeOwnerToken()
            let busyToken = Lease.makeOwnerToken()
            for env in [batchEnv, singleEnv] {
                _ = try await env.acquire(env.id("stale"), token: staleToken, lease: env.unit)
                // Records that are gone after the advance: a completed one and an in-flight one.
                try await env.acquireAndComplete(env.id("lapsed"), lease: env.unit, retention: env.unit)
                _ = try await env.acquire(env.id("lapsed-in-flight"), lease: env.unit, retention: env.unit)
            }
            try await batchEnv.advance(units: 2)
            for env in [batchEnv, singleEnv] {
                _ = try await env.acquire(env.id("busy"), token: busyToken, lease: env.longLease)
                try await env.acquireAndComplete(env.id("done"), lease: env.longLease, result: Data("done".utf8))
                try await env.acquireAndComplete(env.id("printed"), lease: env.longLease, fingerprint: "A")
            }
            let env = batchEnv
            func request(_ key: String, _ fingerprint: String? = nil) throws -> ClaimRequest {
                env.request(try env.id(key), lease: env.longLease, fingerprint: fingerprint)
            }
            let requests = [
                try request("new-1"), try request("done"), try request("busy"), try request("stale"),
                try request("new-1"), try request("done"), try request("printed", "B"), try request("printed", "A"),
                try request("new-2", "N"), try request("new-2", "M"), try request("stale"), try request("busy", "Q"),
                try request("lapsed"), try request("lapsed-in-flight"),
            ]
            let batched = try await batchEnv.store.claim(batch: requests)
            var single: [ClaimAnswer] = []
            for request in requests { single.append(try await singleEnv.store.claim(request)) }
            try expectEqual(batched.count, requests.count, "answers in the batch")
            for index in requests.indices {
                try expectEqual(
                    describe(batched[index]),
                    describe(single[index]),
                    "answer \(index) (\(requests[index].id)): batch vs one by one"
                )
            }
            // And the answers are the rules' answers.
            let first = try expectAcquired(batched[0], "new-1")
            try expect(
                !first.isTakeover && first.fencingToken == 1,
                "new-1: expected a fresh acquisition, got \(describe(batched[0]))"
            )
            try expectEqual(try expectDuplicate(batched[1], "done").result, Data("done".utf8), "done: result")
            try expectEqual(try expectInFlight(batched[2], "busy").ownerToken, busyToken, "busy: holder")
            let takeover = try expectAcquired(batched[3], "stale")
            try expect(
                takeover.isTakeover && takeover.fencingToken == 2 && takeover.attempt == 2,
                "stale: expected a takeover, got \(describe(batched[3]))"
            )
            try expectEqual(
                try expectInFlight(batched[4], "new-1 again").ownerToken,
                requests[0].ownerToken,
                "new-1 again: holder is the batch's first claim"
            )
            _ = try expectDuplicate(batched[5], "done again")
            try expectEqual(
                try expectMismatch(batched[6], "printed with B").fingerprint,
                "A",
                "printed with B: fingerprint"
            )
            _ = try expectDuplicate(batched[7], "printed with A")
            _ = try expectAcquired(batched[8], "new-2 with N")
            _ = try expectMismatch(batched[9], "new-2 with M, claimed with N earlier in the batch")
            try expectEqual(
                try expectInFlight(batched[10], "stale again").ownerToken,
                requests[3].ownerToken,
                "stale again: holder is the batch's takeover"
            )
            _ = try expectInFlight(batched[11], "busy with a fingerprint")
            for (index, key) in [(12, "lapsed"), (13, "lapsed-in-flight")] {
                let fresh = try expectAcquired(batched[index], key)
                try expect(
                    !fresh.isTakeover && fresh.fencingToken == 1 && fresh.attempt == 1,
                    "\(key): expected a fresh acquisition, got \(describe(batched[index]))"
                )
            }
            // A lease's claim time is its record's creation time, kept exactly by a takeover; a fresh
            // claim's may be a moment earlier (a store may date it by the time it sent the claim).
            for (index, key) in [(0, "new-1"), (3, "stale"), (12, "lapsed"), (13, "lapsed-in-flight")] {
                let lease = try expectAcquired(batched[index], key)
                let record = try await batchEnv.existingRecord(batchEnv.id(key))
                let what = "\(key): the lease's claim time against its record's creation time"
                if lease.isTakeover {
                    try expectEqual(lease.claimedAt, record.createdAt, what)
                } else {
                    try batchEnv.expectSameOrMomentEarlier(
                        try unwrap(lease.claimedAt, "\(key): no claim time"),
                        than: record.createdAt,
                        what
                    )
                }
            }
            for key in ["new-1", "done", "busy", "stale", "printed", "new-2", "lapsed", "lapsed-in-flight"] {
                let batchRecord = try await batchEnv.existingRecord(batchEnv.id(key))
                let singleRecord = try await singleEnv.existingRecord(singleEnv.id(key))
                try expectEqual(
                    describe(batchRecord),
                    describe(singleRecord),
                    "record \(key) after batch vs one by one"
                )
            }
            try expectEqual(try await batchEnv.store.claim(batch: []), [], "answers to an empty batch")
        },

        ConformanceCheck(
            "a batch completion answers completed or leaseLost per lease, in order, and writes only the current ones"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let stale = try await env.acquire(env.id("b"), lease: env.unit)
            try await env.advance(units: 2)
            let current = try await env.acquire(env.id("b"), lease: env.longLease, takeover: true)
            let a = try await env.acquire(env.id("a"), lease: env.longLease)
            let c = try await env.acquire(env.id("c"), lease: env.longLease)
            let d = try await env.acquire(env.id("d"), lease: env.longLease)
            try await env.store.release(c)
            let completions = [
                Completion(lease: a, retention: env.retention, result: Data("a1".utf8)),
                Completion(lease: stale, retention: env.retention, result: Data("stale".utf8)),
                Completion(lease: c, retention: env.retention),
                Completion(lease: d, retention: env.retention, result: Data()),
                Completion(lease: a, retention: env.retention, result: Data("a2".utf8)),
                Completion(lease: current, retention: env.retention, result: Data("b2".utf8)),
            ]
            let answers = try await env.store.complete(batch: completions)
            try expectEqual(
                answers,
                [.completed, .leaseLost, .leaseLost, .completed, .leaseLost, .completed],
                "batch completion answers"
            )
            let recordA = try await env.existingRecord(env.id("a"))
            try expectEqual(recordA.state, .completed, "a: state")
            try expectEqual(
                recordA.result,
                Data("a1".utf8),
                "a: result of the first completion, not the refused second"
            )
            let recordB = try await env.existingRecord(env.id("b"))
            try expectEqual(recordB.result, Data("b2".utf8), "b: the current owner's result")
            try expectEqual(recordB.fencingToken, 2, "b: fencing token")
            try expectEqual(try await env.store.record(for: env.id("c")), nil, "c: released, still absent")
            try expectEqual(try await env.existingRecord(env.id("d")).result, Data(), "d: empty result")
            try expectEqual(try await env.store.complete(batch: []), [], "answers to an empty batch")
        },

        ConformanceCheck(
            "a batch renewal answers renewed or leaseLost per lease, in order, extending only the current ones"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let stale = try await env.acquire(env.id("b"), lease: env.unit)
            try await env.advance(units: 2)
            let current = try await env.acquire(env.id("b"), lease: env.longLease, takeover: true)
            let a = try await env.acquire(env.id("a"), lease: env.lease)
            let c = try await env.acquire(env.id("c"), lease: env.lease)
            try await env.store.release(c)
            let d = try await env.acquire(env.id("d"), lease: env.lease)
            try await env.store.complete(Completion(lease: d, retention: env.retention))
            let answers = try await env.store.renew(batch: [a, stale, c, current, d, a], for: env.longLease)
            try expectEqual(answers.count, 6, "answers to a batch of six")
            let kinds = answers.map { answer -> String in
                if case .renewed = answer { return "renewed" }
                return "leaseLost"
            }
            try expectEqual(
                kinds,
                ["renewed", "leaseLost", "leaseLost", "renewed", "leaseLost", "renewed"],
                "batch renewal answers"
            )
            for (index, lease) in [(0, a), (3, current), (5, a)] {
                guard case .renewed(let renewed) = answers[index] else { continue }
                try expectEqual(renewed.ownerToken, lease.ownerToken, "answer \(index): owner token")
                try expectEqual(renewed.fencingToken, lease.fencingToken, "answer \(index): fencing token")
                let record = try await env.existingRecord(lease.id)
                try env.expectSameOrMomentEarlier(
                    renewed.leaseUntil,
                    than: try unwrap(record.leaseUntil, "leaseUntil"),
                    "answer \(index): lease end against the record's"
                )
            }
            let recordA = try await env.existingRecord(a.id)
            try env.expectElapsed(
                from: a.leaseUntil,
                to: try unwrap(recordA.leaseUntil, "a: leaseUntil"),
                env.longLease - env.lease,
                "a: renewed for the long lease"
            )
            try expectEqual(
                try await env.existingRecord(env.id("b")).ownerToken,
                current.ownerToken,
                "b: the current owner, untouched by the stale lease"
            )
            try expectEqual(try await env.store.record(for: env.id("c")), nil, "c: released, still absent")
            try expectEqual(try await env.existingRecord(env.id("d")).state, .completed, "d: still completed")
            try expectEqual(try await env.store.renew(batch: [], for: env.lease), [], "answers to an empty batch")
        },
    ]
}

// MARK: - Races

extension DedupConformance {
    /// 16 handles for a race: even tasks share the environment's store, odd ones get peers of it.
    private static func racingHandles(
        _ env: ConformanceEnvironment,
        _ harness: any ConformanceHarness
    ) async throws
        -> [any DedupStore]
    {
        var handles: [any DedupStore] = []
        for task in 0..<16 {
            handles.append(task.isMultiple(of: 2) ? env.store : try await harness.makePeer(of: env.store))
        }
        return handles
    }

    static let raceChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "16 concurrent tasks on two handles claiming the same 50 keys, singly and in batches, acquire each key exactly once"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let keys = try (0..<50).map { try env.id("race-\($0)") }
            let handles = try await racingHandles(env, harness)
            let lease = env.longLease
            let retention = env.longLease
            let start = StartingLine(tasks: handles.count)
            let ledger = try await withThrowingTaskGroup(of: [(ClaimRequest, ClaimAnswer)].self) { group in
                for (task, handle) in handles.enumerated() {
                    group.addTask {
                        await start.arriveAndWait()
                        // Four groups of four: tasks of a group reach each key in the same round, and
                        // the groups cross each other (forward, backward, from the middle, in batches).
                        let order: [RecordID]
                        switch task % 4 {
                        case 0: order = keys
                        case 1: order = keys.reversed()
                        case 2: order = Array(keys[25...] + keys[..<25])
                        default: order = Array(keys[12...] + keys[..<12])
                        }
                        let requests = order.map { ClaimRequest(id: $0, lease: lease, retention: retention) }
                        var answers: [(ClaimRequest, ClaimAnswer)] = []
                        if task % 4 == 3 {
                            for offset in stride(from: 0, to: requests.count, by: 5) {
                                let chunk = Array(requests[offset..<min(offset + 5, requests.count)])
                                answers += zip(chunk, try await handle.claim(batch: chunk))
                                await Task.yield()  // let the other tasks in, even on a store that never suspends
                            }
                        } else {
                            for request in requests {
                                answers.append((request, try await handle.claim(request)))
                                await Task.yield()
                            }
                        }
                        return answers
                    }
                }
                var all: [(ClaimRequest, ClaimAnswer)] = []
                for try await answers in group { all += answers }
                return all
            }
            try expectEqual(ledger.count, 16 * keys.count, "answers")
            var winners: [IdentityBytes: [String]] = [:]
            for (request, answer) in ledger {
                switch answer {
                case .acquired(let acquired):
                    try expect(
                        !acquired.isTakeover && acquired.fencingToken == 1,
                        "a racing claim of \(request.id) answered \(describe(answer))"
                    )
                    winners[IdentityBytes(request.id), default: []].append(request.ownerToken)
                case .inFlight(let record):
                    try expectEqual(record.state, .inFlight, "state in an inFlight answer")
                default:
                    throw ConformanceFailure("a racing claim of \(request.id) answered \(describe(answer))")
                }
            }
            for id in keys {
                let tokens = winners[IdentityBytes(id)] ?? []
                try expectEqual(tokens.count, 1, "acquisitions of \(id)")
                try expectEqual(
                    try await env.existingRecord(id).ownerToken,
                    tokens.first,
                    "owner of \(id) vs the one acquisition"
                )
            }
        },

        ConformanceCheck(
            "16 concurrent tasks on two handles taking over the same 20 passed leases succeed once per key, with fencing 2"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let keys = try (0..<20).map { try env.id("takeover-\($0)") }
            for id in keys { _ = try await env.acquire(id, lease: env.unit) }
            try await env.advance(units: 2)
            let handles = try await racingHandles(env, harness)
            let lease = env.longLease
            let retention = env.longLease
            let start = StartingLine(tasks: handles.count)
            let ledger = try await withThrowingTaskGroup(of: [(ClaimRequest, ClaimAnswer)].self) { group in
                for (task, handle) in handles.enumerated() {
                    group.addTask {
                        await start.arriveAndWait()
                        let order = task.isMultiple(of: 3) ? keys.reversed() : keys
                        var answers: [(ClaimRequest, ClaimAnswer)] = []
                        for id in order {
                            let request = ClaimRequest(id: id, lease: lease, retention: retention)
                            answers.append((request, try await handle.claim(request)))
                            await Task.yield()
                        }
                        return answers
                    }
                }
                var all: [(ClaimRequest, ClaimAnswer)] = []
                for try await answers in group { all += answers }
                return all
            }
            var winners: [IdentityBytes: [Lease]] = [:]
            for (request, answer) in ledger {
                switch answer {
                case .acquired(let acquired):
                    winners[IdentityBytes(request.id), default: []].append(acquired)
                case .inFlight:
                    break
                default:
                    throw ConformanceFailure("a racing takeover of \(request.id) answered \(describe(answer))")
                }
            }
            for id in keys {
                let leases = winners[IdentityBytes(id)] ?? []
                try expectEqual(leases.count, 1, "takeovers of \(id)")
                try expect(
                    leases[0].isTakeover && leases[0].fencingToken == 2 && leases[0].attempt == 2,
                    "the takeover of \(id): \(leases[0])"
                )
                try expectEqual(try await env.existingRecord(id).ownerToken, leases[0].ownerToken, "owner of \(id)")
            }
        },

        ConformanceCheck(
            "a late completion racing a takeover on another handle: exactly one of them wins, for each of 40 keys"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let peer = try await harness.makePeer(of: env.store)
            let keys = try (0..<40).map { try env.id("photo-finish-\($0)") }
            var leases: [Lease] = []
            for id in keys { leases.append(try await env.acquire(id, lease: env.unit)) }
            try await env.advance(units: 2)
            let store = env.store
            let retention = env.longLease
            enum Outcome: Sendable {
                case completion(Int, Bool)
                case claim(Int, ClaimAnswer)
            }
            let start = StartingLine(tasks: leases.count * 2)
            let outcomes = try await withThrowingTaskGroup(of: Outcome.self) { group in
                for (index, lease) in leases.enumerated() {
                    group.addTask {
                        await start.arriveAndWait()
                        do {
                            try await store.complete(Completion(lease: lease, retention: retention))
                            return .completion(index, true)
                        } catch let error as DedupError where error.code == .leaseLost {
                            return .completion(index, false)
                        }
                    }
                    group.addTask {
                        await start.arriveAndWait()
                        return .claim(
                            index,
                            try await peer.claim(ClaimRequest(id: lease.id, lease: retention, retention: retention))
                        )
                    }
                }
                var all: [Outcome] = []
                for try await outcome in group { all.append(outcome) }
                return all
            }
            var completed: [Int: Bool] = [:]
            var claims: [Int: ClaimAnswer] = [:]
            for outcome in outcomes {
                switch outcome {
                case .completion(let index, let succeeded): completed[index] = succeeded
                case .claim(let index, let answer): claims[index] = answer
                }
            }
            for index in keys.indices {
                let succeeded = try unwrap(completed[index], "completion \(index)")
                let answer = try unwrap(claims[index], "claim \(index)")
                let record = try await env.existingRecord(keys[index])
                if succeeded {
                    _ = try expectDuplicate(answer, "\(keys[index]): the claim after a winning completion")
                    try expectEqual(record.state, .completed, "\(keys[index]): state after a winning completion")
                    try expectEqual(record.fencingToken, 1, "\(keys[index]): fencing token after a winning completion")
                } else {
                    let takeover = try expectAcquired(answer, "\(keys[index]): the claim that beat the completion")
                    try expect(takeover.isTakeover && takeover.fencingToken == 2, "\(keys[index]): \(describe(answer))")
                    try expectEqual(record.state, .inFlight, "\(keys[index]): state after a winning takeover")
                    try expectEqual(
                        record.ownerToken,
                        takeover.ownerToken,
                        "\(keys[index]): owner after a winning takeover"
                    )
                }
            }
        },
    ]
}
