// A store of your own: a `DedupStore` over your database's client, and the conformance suite run
// against it in a test.

import Dedup
import DedupTestKit
import Testing

// snippet.hide
/// Stands in for your database's client, whose operations each run atomically on the server: here
/// the reference in-memory store on the system clock, so the conformance suite below passes.
struct KeyValueClient: Sendable {
    enum Database { case fresh }
    let records: InMemoryDedupStore<SystemDedupClock>

    static func connect(database: Database) async throws -> KeyValueClient {
        KeyValueClient(records: InMemoryDedupStore())
    }
    func reconnect() async throws -> KeyValueClient { self }

    func claimAtomically(_ request: ClaimRequest) async throws -> ClaimAnswer { try await records.claim(request) }
    func claimAllAtomically(_ requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        try await records.claim(batch: requests)
    }
    func completeIfOwner(_ completion: Completion) async throws -> Bool {
        try await ownerChecked { try await records.complete(completion) } != nil
    }
    func completeAllIfOwner(_ completions: [Completion]) async throws -> [CompletionAnswer] {
        try await records.complete(batch: completions)
    }
    func deleteIfOwner(_ lease: Lease) async throws -> Bool {
        try await ownerChecked { try await records.release(lease) } != nil
    }
    func extendIfOwner(_ lease: Lease, by duration: Duration) async throws -> Lease? {
        try await ownerChecked { try await records.renew(lease, for: duration) }
    }
    func read(_ id: RecordID) async throws -> DedupRecord? { try await records.record(for: id) }
    func scan(_ filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage {
        try await records.records(matching: filter, after: cursor, limit: limit)
    }
    func deleteIfMatching(_ ids: [RecordID], _ filter: RecordFilter) async throws -> Int {
        try await records.delete(ids, matching: filter)
    }
    func deleteExpired(limit: Int) async throws -> Int { try await records.purgeExpired(limit: limit) }
    func countByNamespace() async throws -> DedupStats { try await records.stats() }

    private func ownerChecked<Value>(_ write: () async throws -> Value) async throws -> Value? {
        do {
            return try await write()
        } catch let error as DedupError where error.code == .leaseLost {
            return nil
        }
    }
}
// snippet.show

// snippet.store
struct KeyValueDedupStore: DedupStore {
    let client: KeyValueClient  // your database's client

    // One atomic operation (a script, one statement, one transaction): never check-then-set.
    func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try await client.claimAtomically(request)
    }

    // Owner-checked writes: only the record's current owner token may change it.
    func complete(_ completion: Completion) async throws {
        guard try await client.completeIfOwner(completion) else { throw Self.leaseLost(completion.lease) }
    }
    func release(_ lease: Lease) async throws {
        guard try await client.deleteIfOwner(lease) else { throw Self.leaseLost(lease) }
    }
    func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        guard let renewed = try await client.extendIfOwner(lease, by: duration) else { throw Self.leaseLost(lease) }
        return renewed
    }

    private static func leaseLost(_ lease: Lease) -> DedupError {
        DedupError(.leaseLost, "the lease on \(lease.id) is no longer current; nothing was changed")
    }
}
// snippet.end

// snippet.inspection
extension KeyValueDedupStore {
    func record(for id: RecordID) async throws -> DedupRecord? { try await client.read(id) }
    func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage {
        try await client.scan(filter, after: cursor, limit: limit)
    }
    func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        try await client.deleteIfMatching(ids, filter)
    }
    func purgeExpired(limit: Int) async throws -> Int { try await client.deleteExpired(limit: limit) }
    func stats() async throws -> DedupStats { try await client.countByNamespace() }
}
// snippet.end

// snippet.batches
// Optional: a batch in one round trip, with the answers one-by-one calls in order would give.
extension KeyValueDedupStore {
    func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        try await client.claimAllAtomically(requests)
    }
    func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        try await client.completeAllIfOwner(completions)
    }
}
// snippet.end

// snippet.conformance
struct KeyValueHarness: ConformanceHarness {
    func makeStore() async throws -> any DedupStore {
        KeyValueDedupStore(client: try await KeyValueClient.connect(database: .fresh))  // empty, unshared
    }
    func makePeer(of store: any DedupStore) async throws -> any DedupStore {
        // A second connection to the same data, for the checks that race two handles.
        guard let store = store as? KeyValueDedupStore else { return store }
        return KeyValueDedupStore(client: try await store.client.reconnect())
    }
    var timeUnit: Duration { .milliseconds(500) }  // on a server's clock: short enough to wait out
    func advance(by duration: Duration) async throws { try await Task.sleep(for: duration) }
}

@Test(arguments: DedupConformance.checks(manualClock: false))
func conforms(_ check: ConformanceCheck) async throws {
    try await check.run(KeyValueHarness())
}
// snippet.end
