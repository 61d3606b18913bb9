import Dedup
import Foundation

// MARK: - Owner labels

extension DedupConformance {
    /// An owner label with what a careless encoding trips on: spaces, `=`, the stores' own field
    /// names and delimiters, NUL, a newline and multi-byte characters.
    static let trickyOwnerLabel = "pod 7=ready; in_flight owner=1:x fp=- \u{0}\n😀"

    /// The longest owner label, in multi-byte characters: 32 four-byte emoji.
    static let longestOwnerLabel = String(repeating: "😀", count: ClaimRequest.maximumOwnerLabelBytes / 4)

    static let ownerLabelChecks: [ConformanceCheck] = [
        ConformanceCheck(
            "the in-flight record keeps the claim's owner label, any characters up to 128 bytes, through a renewal; inFlight answers and listings show the holder's"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("labelled")
            let lease = try await env.acquire(id, lease: env.longLease, label: trickyOwnerLabel)
            try expectSameLabel(
                try await env.existingRecord(id).ownerLabel,
                trickyOwnerLabel,
                "owner label of the record"
            )
            let renewed = try await env.store.renew(lease, for: env.longLease)
            try expectSameLabel(renewed.ownerLabel, trickyOwnerLabel, "owner label of the renewed lease")
            try expectSameLabel(
                try await env.existingRecord(id).ownerLabel,
                trickyOwnerLabel,
                "owner label after a renewal"
            )
            let held = try expectInFlight(try await env.claim(id, label: "someone-else:1"), "a second claim")
            try expectSameLabel(held.ownerLabel, trickyOwnerLabel, "the holder's label in an inFlight answer")
            let longest = try env.id("longest label")
            _ = try await env.acquire(longest, lease: env.longLease, label: longestOwnerLabel)
            let listed = try await env.listAll(RecordFilter(namespace: ConformanceEnvironment.namespace))
            try expectEqual(listed.count, 2, "records listed")
            for record in listed {
                let expected = IdentityBytes(record.id) == IdentityBytes(id) ? trickyOwnerLabel : longestOwnerLabel
                try expectSameLabel(record.ownerLabel, expected, "owner label of \(record.id) as listed")
            }
            try await env.store.complete(Completion(lease: renewed, retention: env.retention))
            try expectEqual(
                try await env.existingRecord(id).state,
                .completed,
                "state after completing the labelled lease"
            )
        },

        ConformanceCheck(
            "a takeover replaces the owner label; a labelled lease releases; a completed record keeps no label"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("taken over")
            let first = try await env.acquire(id, label: "pod-a")
            try await env.advance(units: 4)
            let second = try await env.acquire(id, label: "pod-b", takeover: true, "claim after the lease passed")
            try expectSameLabel(try await env.existingRecord(id).ownerLabel, "pod-b", "owner label after a takeover")
            try await expectLeaseLost("completing the first holder's lease") {
                try await env.store.complete(Completion(lease: first, retention: env.retention))
            }
            try expectSameLabel(
                try await env.existingRecord(id).ownerLabel,
                "pod-b",
                "owner label after the old holder's refused completion"
            )
            try await env.store.complete(Completion(lease: second, retention: env.retention))
            let completed = try await env.existingRecord(id)
            try expectEqual(completed.state, .completed, "state after completion")
            try expectEqual(completed.ownerLabel, nil, "owner label of a completed record")
            try expectEqual(
                try expectDuplicate(try await env.claim(id), "claim of the completed key").ownerLabel,
                nil,
                "owner label in a duplicate answer"
            )

            let released = try env.id("released")
            try await env.store.release(try await env.acquire(released, label: "pod-c"))
            try expectEqual(try await env.store.record(for: released), nil, "record after releasing a labelled lease")
        },

        ConformanceCheck(
            "a batch claim keeps each request's owner label, byte for byte (canonically equivalent labels too); the same key twice answers inFlight with the first one's"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let ids = try ["batch-a", "batch-b", "batch-c", "batch-d"].map { try env.id($0) }
            let labels = ["pod-\u{E9}", trickyOwnerLabel, "pod-e\u{301}", "pod-\u{E9}"]
            var requests = zip(ids, labels).map { env.request($0, lease: env.longLease, label: $1) }
            requests.append(env.request(ids[1], lease: env.longLease, label: "pod-late"))
            let answers = try await env.store.claim(batch: requests)
            try expectEqual(answers.count, requests.count, "answers")
            for (index, label) in labels.enumerated() {
                let lease = try expectAcquired(answers[index], "batch claim of \(ids[index])")
                try expectSameLabel(lease.ownerLabel, label, "owner label of the lease of \(ids[index])")
                try expectSameLabel(
                    try await env.existingRecord(ids[index]).ownerLabel,
                    label,
                    "owner label of \(ids[index])"
                )
            }
            let repeated = try expectInFlight(answers[4], "the same key again in the batch")
            try expectSameLabel(repeated.ownerLabel, labels[1], "the holder's label for the repeated key")
        },

        ConformanceCheck(
            "an owner label that is empty or over 128 bytes is refused with invalidConfiguration, alone or in a batch, and nothing is written"
        ) { harness in
            let env = try await ConformanceEnvironment(harness)
            let id = try env.id("bad label")
            let good = try env.id("good neighbour")
            for label in [
                "", String(repeating: "x", count: ClaimRequest.maximumOwnerLabelBytes + 1), longestOwnerLabel + "x",
            ] {
                try await expectError(
                    .invalidConfiguration,
                    "a claim with the owner label of \(label.utf8.count) bytes"
                ) {
                    _ = try await env.claim(id, label: label)
                }
                try await expectError(
                    .invalidConfiguration,
                    "a batch with one owner label of \(label.utf8.count) bytes"
                ) {
                    _ = try await env.store.claim(batch: [env.request(good), env.request(id, label: label)])
                }
                try expectEqual(try await env.store.record(for: id), nil, "record after refused claims")
                try expectEqual(
                    try await env.store.record(for: good),
                    nil,
                    "the batch's other key after a refused batch"
                )
            }
        },
    ]
}

/// Expects an owner label equal to `expected`, byte for byte.
func expectSameLabel(
    _ actual: String?,
    _ expected: String,
    _ what: String,
    file: StaticString = #fileID,
    line: UInt = #line
) throws {
    try expect(
        actual.map { $0.utf8.elementsEqual(expected.utf8) } == true,
        "\(what): expected \(expected.debugDescription) (UTF-8 \(Array(expected.utf8))), got \(actual.debugDescription) (UTF-8 \(actual.map { Array($0.utf8) } ?? []))",
        file: file,
        line: line
    )
}
