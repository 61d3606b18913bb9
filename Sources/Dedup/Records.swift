import Foundation

/// Where a record stands.
public enum RecordState: String, Hashable, Sendable, CaseIterable, Codable {
    /// A consumer holds a lease and may be running the handler.
    case inFlight = "in_flight"
    /// The handler succeeded; later deliveries are duplicates until the retention passes.
    case completed
}

/// A record as a store holds it.
public struct DedupRecord: Hashable, Sendable {
    /// Which message of which consumer.
    public var id: RecordID
    /// In flight or completed.
    public var state: RecordState
    /// The current owner's token while in flight; `nil` once completed.
    public var ownerToken: String?
    /// The current holder's readable label while in flight (``ClaimRequest/ownerLabel``, `host:pid`
    /// by default); `nil` once completed (a completed record keeps no holder, as it keeps no token),
    /// and for claims written before stores kept labels.
    public var ownerLabel: String?
    /// The fencing token of the latest acquisition: strictly increasing across successive
    /// acquisitions of the key while any record of it exists.
    public var fencingToken: Int64
    /// How many times the key has been acquired while this record existed (1 for the first).
    public var attempt: Int
    /// When the record was first claimed.
    public var createdAt: Date
    /// When the current lease ends (in flight only).
    public var leaseUntil: Date?
    /// When the handler's success was recorded (completed only).
    public var completedAt: Date?
    /// When the store may forget the record: the end of retention once completed; while in flight,
    /// the lease end plus the retention, so an abandoned claim is cleaned up eventually.
    public var expiresAt: Date
    /// The caller's payload fingerprint, if one was given at claim time.
    public var fingerprint: String?
    /// The handler's encoded result, if it returned one.
    public var result: Data?
    /// When the broker took the message (a stream entry ID's milliseconds, a RocketMQ store time, a
    /// Kafka log-append time), as the claim that created the record gave it
    /// (``ClaimRequest/brokerTime``); `nil` when it gave none. Kept at millisecond precision.
    /// `reset` and `replay` select by it (``selectionTime``), so a replay of a broker time range
    /// re-applies what was published then, however far behind the consumer was.
    public var brokerTime: Date?

    /// Creates a record.
    public init(
        id: RecordID,
        state: RecordState,
        ownerToken: String?,
        fencingToken: Int64,
        attempt: Int,
        createdAt: Date,
        leaseUntil: Date?,
        completedAt: Date?,
        expiresAt: Date,
        fingerprint: String? = nil,
        result: Data? = nil,
        ownerLabel: String? = nil,
        brokerTime: Date? = nil
    ) {
        self.id = id
        self.state = state
        self.ownerToken = ownerToken
        self.ownerLabel = ownerLabel
        self.fencingToken = fencingToken
        self.attempt = attempt
        self.createdAt = createdAt
        self.leaseUntil = leaseUntil
        self.completedAt = completedAt
        self.expiresAt = expiresAt
        self.fingerprint = fingerprint
        self.result = result
        self.brokerTime = brokerTime
    }

    /// A record from times in Unix milliseconds, as stores keep them.
    package init(
        id: RecordID,
        state: RecordState,
        ownerToken: String?,
        fencingToken: Int64,
        attempt: Int,
        createdMilliseconds: Int64,
        leaseUntilMilliseconds: Int64?,
        completedMilliseconds: Int64?,
        expiresMilliseconds: Int64,
        fingerprint: String?,
        result: Data?,
        ownerLabel: String?,
        brokerMilliseconds: Int64? = nil
    ) {
        self.init(
            id: id,
            state: state,
            ownerToken: ownerToken,
            fencingToken: fencingToken,
            attempt: attempt,
            createdAt: Date(millisecondsSince1970: createdMilliseconds),
            leaseUntil: leaseUntilMilliseconds.map { Date(millisecondsSince1970: $0) },
            completedAt: completedMilliseconds.map { Date(millisecondsSince1970: $0) },
            expiresAt: Date(millisecondsSince1970: expiresMilliseconds),
            fingerprint: fingerprint,
            result: result,
            ownerLabel: ownerLabel,
            brokerTime: brokerMilliseconds.map { Date(millisecondsSince1970: $0) }
        )
    }

    /// When the record last changed state: completion time when completed, claim time in flight.
    public var recordTime: Date { completedAt ?? createdAt }

    /// The time ``RecordFilter`` (and so `list`, `reset` and `replay`) selects by: the
    /// ``brokerTime`` when the record carries one, else the ``recordTime``.
    public var selectionTime: Date { brokerTime ?? recordTime }
}

/// What a consumer holds after acquiring a key: proof of ownership for complete, release and renew.
public struct Lease: Hashable, Sendable {
    /// The record this lease is on.
    public var id: RecordID
    /// A random token naming this acquisition; writes with any other token are refused.
    public var ownerToken: String
    /// The claim's ``ClaimRequest/ownerLabel``, as the store keeps it on the record; `nil` when the
    /// store did not say. Keep it when rebuilding a lease by hand: a store may check it with the
    /// token (`RedisDedupStore` does: its owner check compares the value's whole holder header).
    public var ownerLabel: String?
    /// Strictly increasing per key across acquisitions; pass it to downstream systems so they can
    /// refuse writes from an older holder.
    public var fencingToken: Int64
    /// 1 for the first acquisition, more after takeovers.
    public var attempt: Int
    /// When the lease ends unless renewed, on the store's clock: the record's own lease end, or a
    /// moment before it, never after (a store may date a new lease by the time it sent the claim,
    /// as `RedisDedupStore` does by the server's `TIME` read just before its `SET`). The moment is
    /// at most the claim call's own duration; a takeover's and a renewal's are exact.
    public var leaseUntil: Date
    /// `true` when this acquisition took over an expired lease of another consumer.
    public var isTakeover: Bool
    /// When the record was first claimed (its ``DedupRecord/createdAt``), on the store's clock, or a
    /// moment before it, never after; `nil` when the store did not say. A store may keep it with the
    /// completion instead of reading it back (`RedisDedupStore` does), so a renewed lease carries
    /// the first claim's time, not the renewal's.
    public var claimedAt: Date?

    /// Creates a lease. Stores make leases; one made by hand (a test's, say) should leave
    /// `claimedAt` `nil` unless it comes from the store, since a store may keep it as the record's
    /// first-claim time.
    public init(
        id: RecordID,
        ownerToken: String,
        fencingToken: Int64,
        attempt: Int,
        leaseUntil: Date,
        isTakeover: Bool,
        claimedAt: Date? = nil,
        ownerLabel: String? = nil
    ) {
        self.id = id
        self.ownerToken = ownerToken
        self.ownerLabel = ownerLabel
        self.fencingToken = fencingToken
        self.attempt = attempt
        self.leaseUntil = leaseUntil
        self.isTakeover = isTakeover
        self.claimedAt = claimedAt
    }

    /// A new random owner token: 128 random bits as 32 hexadecimal digits.
    public static func makeOwnerToken() -> String {
        let (high, low) = OwnerTokenSource.next()
        return OwnerTokenSource.hex(high, low)
    }
}

/// One key to claim.
public struct ClaimRequest: Hashable, Sendable {
    /// The record to claim.
    public var id: RecordID
    /// The owner token to claim with; a fresh random one by default.
    public var ownerToken: String
    /// Who claims, readable for operators: kept on the in-flight record beside the token and shown
    /// by `dedup-inspect`. 1 to ``maximumOwnerLabelBytes`` UTF-8 bytes, any characters; stores refuse
    /// any other with ``DedupError/Code/invalidConfiguration``. Default ``defaultOwnerLabel``
    /// (`host:pid`); consumers take theirs from ``ConsumerConfiguration/ownerLabel``.
    public var ownerLabel: String
    /// How long the lease lasts unless renewed.
    public var lease: Duration
    /// How long an abandoned in-flight record is kept after its lease ends (the consumer passes its
    /// retention, so abandoned claims age out like completed ones).
    public var retention: Duration
    /// The payload fingerprint to compare with the record's, if the caller supplies one.
    public var fingerprint: String?
    /// When the broker took the message, if the caller knows it; a claim that creates the record
    /// keeps it there (``DedupRecord/brokerTime``, millisecond precision), and a later claim of an
    /// existing record does not change it.
    public var brokerTime: Date?

    /// Creates a claim request.
    public init(
        id: RecordID,
        ownerToken: String = Lease.makeOwnerToken(),
        lease: Duration,
        retention: Duration,
        fingerprint: String? = nil,
        ownerLabel: String = ClaimRequest.defaultOwnerLabel,
        brokerTime: Date? = nil
    ) {
        self.id = id
        self.ownerToken = ownerToken
        self.ownerLabel = ownerLabel
        self.lease = lease
        self.retention = retention
        self.fingerprint = fingerprint
        self.brokerTime = brokerTime
    }
}

/// A store's answer to a claim.
public enum ClaimAnswer: Hashable, Sendable {
    /// The caller holds the key: run the handler. A takeover of an expired lease says so in the lease.
    case acquired(Lease)
    /// The key was already completed: skip the handler and ack the message.
    case duplicate(DedupRecord)
    /// Another consumer holds a live lease: neither run nor ack.
    case inFlight(DedupRecord)
    /// The record exists with a different payload fingerprint; the record is unchanged.
    case payloadMismatch(DedupRecord)
}

/// A completion to write: the lease that ran the handler, how long to remember it, and the result.
public struct Completion: Hashable, Sendable {
    /// The lease under which the handler succeeded.
    public var lease: Lease
    /// How long later deliveries are skipped.
    public var retention: Duration
    /// The handler's encoded result, returned to later duplicates.
    public var result: Data?

    /// Creates a completion.
    public init(lease: Lease, retention: Duration, result: Data? = nil) {
        self.lease = lease
        self.retention = retention
        self.result = result
    }
}

/// The answer for one completion of a batch.
public enum CompletionAnswer: Hashable, Sendable {
    /// The record is now completed.
    case completed
    /// The lease was no longer current; nothing changed.
    case leaseLost
}

/// The answer for one lease of a batch renewal.
public enum RenewalAnswer: Hashable, Sendable {
    /// The lease was extended; this is the extended lease.
    case renewed(Lease)
    /// The lease was no longer current; nothing changed.
    case leaseLost
}
