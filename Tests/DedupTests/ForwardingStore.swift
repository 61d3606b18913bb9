import Dedup

/// A test store wrapping another that hands it every single-key and inspection call it does not
/// implement itself; its batch claims and completions are `DedupStore`'s defaults (one by one).
protocol SingleCallForwardingStore: DedupStore {
    associatedtype Base: DedupStore
    var base: Base { get }
}

extension SingleCallForwardingStore {
    func claim(_ request: ClaimRequest) async throws -> ClaimAnswer { try await base.claim(request) }
    func complete(_ completion: Completion) async throws { try await base.complete(completion) }
    func release(_ lease: Lease) async throws { try await base.release(lease) }
    func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        try await base.renew(lease, for: duration)
    }
    func record(for id: RecordID) async throws -> DedupRecord? { try await base.record(for: id) }
    func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage {
        try await base.records(matching: filter, after: cursor, limit: limit)
    }
    func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        try await base.delete(ids, matching: filter)
    }
    func purgeExpired(limit: Int) async throws -> Int { try await base.purgeExpired(limit: limit) }
    func stats() async throws -> DedupStats { try await base.stats() }
}

/// A test store wrapping another: every call goes to `base` unless the store implements it itself.
/// The batch renewal is not forwarded: it stays the protocol's default (concurrent single
/// renewals), so a store that changes `renew(_:for:)` changes batch renewals too.
protocol ForwardingStore: SingleCallForwardingStore {}

extension ForwardingStore {
    func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] { try await base.claim(batch: requests) }
    func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        try await base.complete(batch: completions)
    }
}
