import Dedup
import Foundation

// MARK: - Broker time

extension DedupConformance {
    /// A broker time with a sub-millisecond part, which a store keeps to the millisecond.
    static func brokerTime(_ milliseconds: Int64) -> (given: Date, kept: Date) {
        (
            Date(millisecondsSince1970: milliseconds).addingTimeInterval(0.0003),
            Date(millisecondsSince1970: milliseconds)
        )
    }

    static let brokerTimeChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "the claim that creates a record keeps its broker time to the millisecond; a renewal, a takeover, a completion and a later duplicate claim leave it unchanged"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("published")
            let (given, kept) = brokerTime(1_600_000_000_123)
            let first = try await env.acquire(id, brokerTime: given)
            try expectEqual(try await env.existingRecord(id).brokerTime, kept, "broker time of the new record")
            let held = try expectInFlight(
                try await env.claim(id, brokerTime: Date(millisecondsSince1970: 5)),
                "a claim while the lease is live"
            )
            try expectEqual(held.brokerTime, kept, "broker time in an inFlight answer")
            _ = try await env.store.renew(first, for: env.lease)
            try expectEqual(try await env.existingRecord(id).brokerTime, kept, "broker time after a renewal")
            try await env.advance(units: 4)
            let second = try await env.acquire(
                id,
                brokerTime: Date(millisecondsSince1970: 1_650_000_000_000),
                takeover: true,
                "claim after the lease passed"
            )
            try expectEqual(
                try await env.existingRecord(id).brokerTime,
                kept,
                "broker time after a takeover with another broker time"
            )
            try await env.store.complete(Completion(lease: second, retention: env.retention, result: Data("r".utf8)))
            let completed = try await env.existingRecord(id)
            try expectEqual(completed.state, .completed, "state after completion")
            try expectEqual(completed.brokerTime, kept, "broker time after completion")
            let duplicate = try expectDuplicate(
                try await env.claim(id, brokerTime: Date(millisecondsSince1970: 1_700_000_000_000)),
                "a redelivery with another broker time"
            )
            try expectEqual(duplicate.brokerTime, kept, "broker time in a duplicate answer")
            try expectEqual(try await env.existingRecord(id).brokerTime, kept, "broker time after the duplicate claim")
            try expectEqual(
                try await env.listAll(RecordFilter(namespace: ConformanceEnvironment.namespace)).first?.brokerTime,
                kept,
                "broker time as listed"
            )
        },

        ConformanceCheck("a record claimed without a broker time has none, in flight and completed") { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("no broker time")
            let lease = try await env.acquire(id)
            try expectEqual(
                try await env.existingRecord(id).brokerTime,
                nil,
                "broker time of a record claimed without one"
            )
            try await env.store.complete(Completion(lease: lease, retention: env.retention))
            try expectEqual(try await env.existingRecord(id).brokerTime, nil, "broker time after completion")
            let record = try expectDuplicate(
                try await env.claim(id, brokerTime: Date(millisecondsSince1970: 1_000)),
                "a later claim with one"
            )
            try expectEqual(record.brokerTime, nil, "a duplicate claim does not add a broker time")
            try expectEqual(record.selectionTime, record.recordTime, "selection time without a broker time")
        },

        ConformanceCheck(
            "a batch claim keeps each created record's broker time to the millisecond; the same key again answers inFlight with the first one's"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let ids = try ["b-1", "b-2", "b-3"].map { try env.id($0) }
            let times: [(given: Date, kept: Date)?] = [
                brokerTime(1_600_000_000_001), nil, brokerTime(1_600_000_000_999),
            ]
            var requests = zip(ids, times).map { env.request($0, lease: env.longLease, brokerTime: $1?.given) }
            requests.append(env.request(ids[0], lease: env.longLease, brokerTime: Date(millisecondsSince1970: 42)))
            let answers = try await env.store.claim(batch: requests)
            try expectEqual(answers.count, requests.count, "answers")
            for index in ids.indices {
                _ = try expectAcquired(answers[index], "batch claim of \(ids[index])")
                try expectEqual(
                    try await env.existingRecord(ids[index]).brokerTime,
                    times[index]?.kept,
                    "broker time of \(ids[index])"
                )
            }
            try expectEqual(
                try expectInFlight(answers[3], "the same key again").brokerTime,
                times[0]?.kept,
                "the holder's broker time"
            )
        },

        ConformanceCheck(
            "a time filter selects by broker time where a record carries one, by record time otherwise; deleting by it removes exactly those"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            // Records without a broker time: their record time is the store's "now".
            let plain = try await env.acquireAndComplete(try env.id("plain completed"))
            let plainInFlight = try env.id("plain in flight")
            _ = try await env.acquire(plainInFlight, lease: env.longLease)
            let now = try await env.existingRecord(plain.id).recordTime.millisecondsSince1970
            let hour: Int64 = 3_600_000
            let t1 = now - 4 * hour
            let t2 = now - 2 * hour
            // Published hours ago, processed now: in flight and completed, at and around the bounds.
            let published: [(key: String, at: Int64, complete: Bool)] = [
                ("before", t1 - 1, true), ("at T1", t1, true), ("inside", t1 + hour, false),
                ("last inside", t2 - 1, true),
                ("at T2", t2, false), ("after", t2 + hour, true),
            ]
            for message in published {
                let id = try env.id(message.key)
                if message.complete {
                    try await env.acquireAndComplete(id, brokerTime: Date(millisecondsSince1970: message.at))
                } else {
                    _ = try await env.acquire(
                        id,
                        lease: env.longLease,
                        brokerTime: Date(millisecondsSince1970: message.at)
                    )
                }
            }
            let all = try await env.listAll(RecordFilter(namespace: ConformanceEnvironment.namespace))
            try expectEqual(all.count, published.count + 2, "records")
            let inRange = try Set(["at T1", "inside", "last inside"].map { IdentityBytes(try env.id($0)) })
            let range = RecordFilter(
                namespace: ConformanceEnvironment.namespace,
                from: Date(millisecondsSince1970: t1),
                until: Date(millisecondsSince1970: t2)
            )
            try expectEqual(try await env.listedIdentities(range), inRange, "listed in broker range [T1, T2)")
            let recent = RecordFilter(
                from: Date(millisecondsSince1970: now - hour / 2),
                until: Date(millisecondsSince1970: now + hour)
            )
            try expectEqual(
                try await env.listedIdentities(recent),
                [IdentityBytes(plain.id), IdentityBytes(plainInFlight)],
                "listed by the last hour: only the records without a broker time, though all were processed now"
            )
            var inFlightRange = range
            inFlightRange.state = .inFlight
            try expectEqual(
                try await env.listedIdentities(inFlightRange),
                [IdentityBytes(try env.id("inside"))],
                "in flight in [T1, T2)"
            )
            let stats = try await env.store.stats()
            try expectEqual(
                stats.namespaces.first?.oldestBrokerTime,
                Date(millisecondsSince1970: t1 - 1),
                "oldest broker time in stats"
            )
            try expectEqual(
                stats.namespaces.first?.newestBrokerTime,
                Date(millisecondsSince1970: t2 + hour),
                "newest broker time in stats"
            )

            let deleted = try await env.store.delete(all.map(\.id), matching: range)
            try expectEqual(deleted, inRange.count, "deleted by broker range [T1, T2)")
            let left = Set(try await env.listAll(RecordFilter()).map { IdentityBytes($0.id) })
            try expectEqual(
                left,
                Set(all.map { IdentityBytes($0.id) }).subtracting(inRange),
                "records left after the reset"
            )
        },

        ConformanceCheck(
            "a broker time before 1970 or past the year 5138 is refused with invalidConfiguration, alone or in a batch, and nothing is written"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("bad broker time")
            let good = try env.id("good neighbour")
            let bad = [
                Date(millisecondsSince1970: -1), Date(millisecondsSince1970: ClaimRequest.latestBrokerMilliseconds + 1),
            ]
            for time in bad {
                try await expectError(.invalidConfiguration, "a claim with broker time \(time)") {
                    _ = try await env.claim(id, brokerTime: time)
                }
                try await expectError(.invalidConfiguration, "a batch with broker time \(time)") {
                    _ = try await env.store.claim(batch: [env.request(good), env.request(id, brokerTime: time)])
                }
            }
            try expectEqual(try await env.store.stats().total, 0, "records written")
            let latest = Date(millisecondsSince1970: ClaimRequest.latestBrokerMilliseconds)
            _ = try await env.acquire(id, brokerTime: latest)
            try expectEqual(try await env.existingRecord(id).brokerTime, latest, "the latest broker time")
        },
    ]
}
