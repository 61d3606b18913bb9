import Dedup
import Foundation
import Testing

/// Puts records into a store the way consumers do: claims and completions through the store's API.
struct StoreFiller {
    let store: any DedupStore

    /// Completes `keys` in `namespace` (claim + complete), in batches; returns their records' times.
    func complete(
        _ namespace: String,
        keys: [String],
        retention: Duration = .seconds(3600),
        result: Data? = nil
    ) async throws {
        for chunk in stride(from: 0, to: keys.count, by: 500).map({ Array(keys[$0..<min($0 + 500, keys.count)]) }) {
            let requests = try chunk.map {
                ClaimRequest(id: try RecordID(namespace: namespace, key: $0), lease: .seconds(60), retention: retention)
            }
            let answers = try await store.claim(batch: requests)
            let completions: [Completion] = answers.compactMap {
                if case .acquired(let lease) = $0 {
                    return Completion(lease: lease, retention: retention, result: result)
                }
                return nil
            }
            #expect(completions.count == chunk.count, "every key should be new")
            let results = try await store.complete(batch: completions)
            #expect(results.allSatisfy { $0 == .completed })
        }
    }

    /// Claims `key` and leaves it in flight; returns the lease.
    @discardableResult
    func claim(
        _ namespace: String,
        key: String,
        lease: Duration = .seconds(300),
        ownerLabel: String = ClaimRequest.defaultOwnerLabel
    ) async throws -> Lease {
        let answer = try await store.claim(
            ClaimRequest(
                id: try RecordID(namespace: namespace, key: key),
                lease: lease,
                retention: .seconds(3600),
                ownerLabel: ownerLabel
            )
        )
        guard case .acquired(let held) = answer else { throw InspectTestError("\(key) was not acquired: \(answer)") }
        return held
    }
}

/// Waits until the wall clock (milliseconds) has moved past `milliseconds`: record times are
/// milliseconds, so a boundary taken between two groups of records must differ from both.
func clockMoved(past milliseconds: Int64) async -> Int64 {
    while true {
        let now = SystemDedupClock().nowMilliseconds()
        if now > milliseconds { return now }
        await Task.yield()
    }
}

/// A boundary time strictly after everything written so far and strictly before anything written
/// afterwards.
func timeBoundary() async -> Int64 {
    let start = SystemDedupClock().nowMilliseconds()
    let boundary = await clockMoved(past: start)
    _ = await clockMoved(past: boundary)
    return boundary
}

extension Dictionary where Key == String, Value == Any {
    func int(_ key: String) -> Int? { (self[key] as? NSNumber)?.intValue }
    func string(_ key: String) -> String? { self[key] as? String }
    func bool(_ key: String) -> Bool? { (self[key] as? NSNumber)?.boolValue }
    func objects(_ key: String) -> [[String: Any]] { self[key] as? [[String: Any]] ?? [] }
    func object(_ key: String) -> [String: Any]? { self[key] as? [String: Any] }
}
