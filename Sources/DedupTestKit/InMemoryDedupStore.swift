import Dedup
import Foundation
import Synchronization

/// The reference ``/Dedup/DedupStore``: every rule of the store contract, kept in memory.
///
/// Use it in unit tests of your own consumers (on a ``ManualDedupClock``, leases and retention pass
/// only when the test says so), and read it as the executable definition of what the SQLite and
/// Redis stores do. It is the store the conformance suite is checked against first.
///
/// Every call takes one lock for microseconds and reads the clock once, so a call is atomic and runs
/// inline on the calling task. Identities are compared by their UTF-8 bytes, as the persistent stores
/// compare them: a precomposed `"é"` and `"e\u{301}"` are two keys. Records live as long as the
/// store object; nothing is written anywhere.
public final class InMemoryDedupStore<Clock: DedupClock>: DedupStore {
    /// The clock the store reads "now" from.
    public let clock: Clock
    private let state = Mutex(State())

    /// Creates an empty store on `clock`.
    public init(clock: Clock) {
        self.clock = clock
    }

    // MARK: Claims

    /// Claims a key; see ``/Dedup/DedupStore/claim(_:)``.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try Self.validate(request)
        let now = clock.nowMilliseconds()
        return state.withLock { $0.claim(request, now: now) }
    }

    /// Claims keys in order under one lock; see ``/Dedup/DedupStore/claim(batch:)``.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        for request in requests { try Self.validate(request) }
        let now = clock.nowMilliseconds()
        return state.withLock { state in requests.map { state.claim($0, now: now) } }
    }

    /// Completes a lease; see ``/Dedup/DedupStore/complete(_:)``.
    public func complete(_ completion: Completion) async throws {
        let now = clock.nowMilliseconds()
        if !state.withLock({ $0.complete(completion, now: now) }) {
            throw Self.leaseLost(completion.lease)
        }
    }

    /// Completes leases in order under one lock; see ``/Dedup/DedupStore/complete(batch:)``.
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        let now = clock.nowMilliseconds()
        return state.withLock { state in
            completions.map { state.complete($0, now: now) ? .completed : .leaseLost }
        }
    }

    /// Releases a lease; see ``/Dedup/DedupStore/release(_:)``.
    public func release(_ lease: Lease) async throws {
        let now = clock.nowMilliseconds()
        let released = state.withLock { state -> Bool in
            let key = StorageKey(lease.id)
            guard state.currentOwnerRecord(key, lease: lease, now: now) != nil else { return false }
            state.records[key] = nil
            return true
        }
        if !released { throw Self.leaseLost(lease) }
    }

    /// Renews a lease; see ``/Dedup/DedupStore/renew(_:for:)``.
    public func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        let now = clock.nowMilliseconds()
        let renewed = state.withLock { state -> Int64? in
            let key = StorageKey(lease.id)
            guard var record = state.currentOwnerRecord(key, lease: lease, now: now),
                let oldLeaseUntil = record.leaseUntil
            else { return nil }
            let leaseUntil = now + duration.wholeMilliseconds
            record.expiresAt = leaseUntil + (record.expiresAt - oldLeaseUntil)
            record.leaseUntil = leaseUntil
            state.records[key] = record
            return leaseUntil
        }
        guard let renewed else { throw Self.leaseLost(lease) }
        var extended = lease
        extended.leaseUntil = Date(millisecondsSince1970: renewed)
        return extended
    }

    /// Renews leases one by one in order; see ``/Dedup/DedupStore/renew(batch:for:)``.
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        var answers: [RenewalAnswer] = []
        answers.reserveCapacity(leases.count)
        for lease in leases {
            do {
                answers.append(.renewed(try await renew(lease, for: duration)))
            } catch let error as DedupError where error.code == .leaseLost {
                answers.append(.leaseLost)
            }
        }
        return answers
    }

    // MARK: Inspection

    /// The live record of `id`, or `nil`; see ``/Dedup/DedupStore/record(for:)``.
    public func record(for id: RecordID) async throws -> DedupRecord? {
        let now = clock.nowMilliseconds()
        return state.withLock { $0.liveRecord(StorageKey(id), now: now)?.record }
    }

    /// A page of live records in ``/Dedup/RecordID`` order (UTF-8 bytes of namespace, then key), after the
    /// cursor; see ``/Dedup/DedupStore/records(matching:after:limit:)``.
    ///
    /// The cursor is the last returned identity in ``/Dedup/RecordID/encoded`` form, so a page continues
    /// correctly even if records were added or deleted in between.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for a limit below 1 or a cursor this
    ///   store did not make.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage
    {
        guard limit >= 1 else {
            throw DedupError(.invalidConfiguration, "the page limit must be at least 1, not \(limit)")
        }
        var start: StorageKey?
        if let cursor {
            guard let id = RecordID(encoded: Substring(cursor.token)) else {
                throw DedupError(
                    .invalidConfiguration,
                    "the page cursor \(cursor.token.debugDescription) is not one of this store's"
                )
            }
            start = StorageKey(id)
        }
        let now = clock.nowMilliseconds()
        let candidates = state.withLock { state -> [(StorageKey, DedupRecord)] in
            state.records.compactMap { key, stored -> (StorageKey, DedupRecord)? in
                if let start, key <= start { return nil }
                guard now < stored.expiresAt else { return nil }
                let record = stored.record
                return filter.matches(record) ? (key, record) : nil
            }
        }
        let sorted = candidates.sorted { $0.0 < $1.0 }
        let page = sorted.prefix(limit).map(\.1)
        let next = sorted.count > limit ? page.last.map { PageCursor(token: $0.id.encoded) } : nil
        return RecordPage(records: page, next: next)
    }

    /// Deletes those of `ids` whose live record matches `filter`; see
    /// ``/Dedup/DedupStore/delete(_:matching:)``. An identity listed twice is deleted (and counted) once.
    public func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        let now = clock.nowMilliseconds()
        return state.withLock { state in
            var deleted = 0
            for id in ids {
                let key = StorageKey(id)
                guard let stored = state.liveRecord(key, now: now), filter.matches(stored.record) else { continue }
                state.records[key] = nil
                deleted += 1
            }
            return deleted
        }
    }

    /// Deletes at most `limit` expired records, those that expired first going first; see
    /// ``/Dedup/DedupStore/purgeExpired(limit:)``.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for a limit below 1.
    public func purgeExpired(limit: Int) async throws -> Int {
        guard limit >= 1 else {
            throw DedupError(.invalidConfiguration, "the purge limit must be at least 1, not \(limit)")
        }
        let now = clock.nowMilliseconds()
        return state.withLock { state in
            let expired = state.records
                .filter { now >= $0.value.expiresAt }
                .sorted { ($0.value.expiresAt, $0.key) < ($1.value.expiresAt, $1.key) }
                .prefix(limit)
            for (key, _) in expired { state.records[key] = nil }
            return expired.count
        }
    }

    /// Counts of live records by namespace (sorted by the namespace's UTF-8 bytes); see
    /// ``/Dedup/DedupStore/stats()``.
    public func stats() async throws -> DedupStats {
        let now = clock.nowMilliseconds()
        let live = state.withLock { state in state.records.values.filter { now < $0.expiresAt } }
        var byNamespace: [StorageKey.Bytes: DedupStats.NamespaceStats] = [:]
        for stored in live {
            let time = stored.completedAt ?? stored.createdAt
            let date = Date(millisecondsSince1970: time)
            let namespace = StorageKey.Bytes(stored.id.namespace)
            var entry =
                byNamespace[namespace]
                ?? DedupStats.NamespaceStats(
                    namespace: stored.id.namespace,
                    inFlight: 0,
                    expiredLeases: 0,
                    completed: 0,
                    oldest: nil,
                    newest: nil
                )
            switch stored.state {
            case .inFlight:
                entry.inFlight += 1
                if let leaseUntil = stored.leaseUntil, now >= leaseUntil { entry.expiredLeases += 1 }
            case .completed:
                entry.completed += 1
            }
            entry.oldest = min(entry.oldest ?? date, date)
            entry.newest = max(entry.newest ?? date, date)
            entry.include(brokerTime: stored.brokerTime.map { Date(millisecondsSince1970: $0) })
            byNamespace[namespace] = entry
        }
        let sorted = byNamespace.sorted { $0.key < $1.key }.map(\.value)
        return DedupStats(namespaces: sorted)
    }

    // MARK: Helpers

    /// Refuses identities that bypassed ``/Dedup/RecordID``'s validation (made with its unchecked
    /// initialiser) and invalid owner labels, so the reference store never holds what the
    /// persistent ones would refuse.
    private static func validate(_ request: ClaimRequest) throws(DedupError) {
        try ClaimRequest.validate(ownerLabel: request.ownerLabel)
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        let id = request.id
        try RecordID.validate(namespace: id.namespace)
        let keyBytes = id.key.utf8.count
        guard keyBytes >= 1, keyBytes <= RecordID.maximumKeyBytes else {
            throw DedupError(
                .invalidKey,
                "the dedup key is \(keyBytes) UTF-8 bytes; it must be 1 to \(RecordID.maximumKeyBytes)"
            )
        }
    }

    private static func leaseLost(_ lease: Lease) -> DedupError {
        DedupError(
            .leaseLost,
            "the lease on \(lease.id) (fencing token \(lease.fencingToken)) is no longer current: it was taken over, released, completed, deleted or expired"
        )
    }
}

extension InMemoryDedupStore where Clock == SystemDedupClock {
    /// Creates an empty store on the host's real-time clock.
    public convenience init() {
        self.init(clock: SystemDedupClock())
    }
}

// MARK: - Storage

/// An identity as the stores compare it: UTF-8 bytes of namespace, then of key.
private struct StorageKey: Hashable, Comparable {
    /// UTF-8 bytes, ordered lexicographically.
    struct Bytes: Hashable, Comparable {
        let bytes: [UInt8]
        init(_ string: String) { bytes = Array(string.utf8) }
        static func < (lhs: Bytes, rhs: Bytes) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
    }

    let namespace: Bytes
    let key: Bytes

    init(_ id: RecordID) {
        namespace = Bytes(id.namespace)
        key = Bytes(id.key)
    }

    static func < (lhs: StorageKey, rhs: StorageKey) -> Bool {
        lhs.namespace != rhs.namespace ? lhs.namespace < rhs.namespace : lhs.key < rhs.key
    }
}

/// A record with times in store milliseconds.
private struct StoredRecord {
    var id: RecordID
    var state: RecordState
    var ownerToken: String?
    var ownerLabel: String?
    var fencingToken: Int64
    var attempt: Int
    var createdAt: Int64
    var leaseUntil: Int64?
    var completedAt: Int64?
    var expiresAt: Int64
    var fingerprint: String?
    var result: Data?
    /// Set by the claim that created the record; nothing changes it after.
    var brokerTime: Int64?

    var record: DedupRecord {
        DedupRecord(
            id: id,
            state: state,
            ownerToken: ownerToken,
            fencingToken: fencingToken,
            attempt: attempt,
            createdMilliseconds: createdAt,
            leaseUntilMilliseconds: leaseUntil,
            completedMilliseconds: completedAt,
            expiresMilliseconds: expiresAt,
            fingerprint: fingerprint,
            result: result,
            ownerLabel: ownerLabel,
            brokerMilliseconds: brokerTime
        )
    }
}

private struct State {
    var records: [StorageKey: StoredRecord] = [:]

    /// The record if it is live; an expired one counts as absent.
    func liveRecord(_ key: StorageKey, now: Int64) -> StoredRecord? {
        guard let stored = records[key], now < stored.expiresAt else { return nil }
        return stored
    }

    /// The live in-flight record whose owner is the lease's, or `nil`.
    func currentOwnerRecord(_ key: StorageKey, lease: Lease, now: Int64) -> StoredRecord? {
        guard let stored = liveRecord(key, now: now), stored.state == .inFlight,
            stored.ownerToken == lease.ownerToken
        else { return nil }
        return stored
    }

    mutating func claim(_ request: ClaimRequest, now: Int64) -> ClaimAnswer {
        let key = StorageKey(request.id)
        let leaseMilliseconds = request.lease.wholeMilliseconds
        let retentionMilliseconds = request.retention.wholeMilliseconds
        guard var stored = liveRecord(key, now: now) else {
            let leaseUntil = now + leaseMilliseconds
            records[key] = StoredRecord(
                id: request.id,
                state: .inFlight,
                ownerToken: request.ownerToken,
                ownerLabel: request.ownerLabel,
                fencingToken: 1,
                attempt: 1,
                createdAt: now,
                leaseUntil: leaseUntil,
                completedAt: nil,
                expiresAt: leaseUntil + retentionMilliseconds,
                fingerprint: request.fingerprint,
                result: nil,
                brokerTime: request.brokerMilliseconds
            )
            return .acquired(
                Lease(
                    id: request.id,
                    ownerToken: request.ownerToken,
                    fencingToken: 1,
                    attempt: 1,
                    leaseUntil: Date(millisecondsSince1970: leaseUntil),
                    isTakeover: false,
                    claimedAt: Date(millisecondsSince1970: now),
                    ownerLabel: request.ownerLabel
                )
            )
        }
        if let held = stored.fingerprint, let offered = request.fingerprint, held != offered {
            return .payloadMismatch(stored.record)
        }
        switch stored.state {
        case .completed:
            return .duplicate(stored.record)
        case .inFlight:
            if let leaseUntil = stored.leaseUntil, now < leaseUntil {
                return .inFlight(stored.record)
            }
            let leaseUntil = now + leaseMilliseconds
            stored.ownerToken = request.ownerToken
            stored.ownerLabel = request.ownerLabel
            stored.fencingToken += 1
            stored.attempt += 1
            stored.leaseUntil = leaseUntil
            stored.expiresAt = leaseUntil + retentionMilliseconds
            if stored.fingerprint == nil { stored.fingerprint = request.fingerprint }
            records[key] = stored
            return .acquired(
                Lease(
                    id: stored.id,
                    ownerToken: request.ownerToken,
                    fencingToken: stored.fencingToken,
                    attempt: stored.attempt,
                    leaseUntil: Date(millisecondsSince1970: leaseUntil),
                    isTakeover: true,
                    claimedAt: Date(millisecondsSince1970: stored.createdAt),
                    ownerLabel: request.ownerLabel
                )
            )
        }
    }

    /// Completes the lease's record; `false` (and nothing changed) when the lease is not current.
    mutating func complete(_ completion: Completion, now: Int64) -> Bool {
        let key = StorageKey(completion.lease.id)
        guard var stored = currentOwnerRecord(key, lease: completion.lease, now: now) else { return false }
        stored.state = .completed
        stored.ownerToken = nil
        stored.ownerLabel = nil
        stored.leaseUntil = nil
        stored.completedAt = now
        stored.expiresAt = now + completion.retention.wholeMilliseconds
        stored.result = completion.result
        records[key] = stored
        return true
    }
}
