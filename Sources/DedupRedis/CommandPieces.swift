import Dedup
import Foundation

/// Whole milliseconds of the durations a call converts, remembering the last two: a batch's
/// requests share their lease and retention, and converting a `Duration` costs hundreds of
/// instructions.
struct DurationMilliseconds {
    private var first: (Duration, Int64)?
    private var second: (Duration, Int64)?

    mutating func milliseconds(_ duration: Duration, encodedAnew: inout Bool) -> Int64 {
        if let first, first.0 == duration { return first.1 }
        if let second, second.0 == duration { return second.1 }
        encodedAnew = true
        let value = duration.wholeMilliseconds
        second = first
        first = (duration, value)
        return value
    }
}

/// The parts of the hot commands that depend only on the lease and retention, encoded once and
/// kept by the store while they stay the same (a consumer's calls all share them).
struct CommandPieces {
    private var durations = DurationMilliseconds()
    private var claimPieces: (lease: Duration, retention: Duration, middle: [UInt8], tail: [UInt8])?
    private var retentionPiece: (retention: Duration, argument: [UInt8])?
    /// The owner header's start (``RecordValue/ownerHeaderStart(label:)``) for the labels of the
    /// latest calls, and whether the label may claim (``/Dedup/ClaimRequest/validate(ownerLabel:)``): a
    /// consumer's calls all carry one label, a store shared by a few consumers a few.
    private var headerStarts: [(label: String?, bytes: [UInt8], isValid: Bool)] = []
    /// Set when a piece was encoded since the copy was taken: only then is it worth keeping.
    var encodedAnew = false

    /// The owner header's start for a lease's label, encoded once per label.
    mutating func ownerHeaderStart(_ label: String?) -> [UInt8] {
        headerStarts[headerStartIndex(label)].bytes
    }

    /// The owner header's start for a claim's label, which is checked once, when first encoded.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for an empty or over-long label.
    mutating func ownerHeaderStart(claimingAs label: String) throws(DedupError) -> [UInt8] {
        let index = headerStartIndex(label)
        if !headerStarts[index].isValid { try ClaimRequest.validate(ownerLabel: label) }
        return headerStarts[index].bytes
    }

    private mutating func headerStartIndex(_ label: String?) -> Int {
        // By index: iterating would copy every entry. By bytes: `==` would take a canonically
        // equivalent label ("é", "e\u{301}") for this one, and write its bytes instead.
        for index in headerStarts.indices where Self.sameBytes(headerStarts[index].label, label) { return index }
        if headerStarts.count == 4 { headerStarts.removeFirst() }
        let isValid = label.map { (try? ClaimRequest.validate(ownerLabel: $0)) != nil } ?? false
        headerStarts.append((label, RecordValue.ownerHeaderStart(label: label), isValid))
        encodedAnew = true
        return headerStarts.count - 1
    }

    private static func sameBytes(_ lhs: String?, _ rhs: String?) -> Bool {
        guard let lhs, let rhs else { return lhs == nil && rhs == nil }
        return lhs.utf8.count == rhs.utf8.count && lhs.utf8.elementsEqual(rhs.utf8)
    }

    mutating func milliseconds(_ duration: Duration) -> Int64 {
        durations.milliseconds(duration, encodedAnew: &encodedAnew)
    }

    /// For a claim's `SET`: the new record's lease times after its owner header (`<lease span>
    /// <retention>`, ``RecordValue/appendNewLeaseTimes(leaseMilliseconds:retentionMilliseconds:to:)``)
    /// and the encoded arguments after the value (`NX PX <lease + retention - 1> GET`).
    mutating func claim(
        lease leaseDuration: Duration,
        retention retentionDuration: Duration
    ) -> (middle: [UInt8], tail: [UInt8]) {
        if let claimPieces, claimPieces.lease == leaseDuration, claimPieces.retention == retentionDuration {
            return (claimPieces.middle, claimPieces.tail)
        }
        let lease = milliseconds(leaseDuration)
        let retention = milliseconds(retentionDuration)
        var middle: [UInt8] = []
        RecordValue.appendNewLeaseTimes(leaseMilliseconds: lease, retentionMilliseconds: retention, to: &middle)
        var tail = RedisCommand("NX", "PX")
        let (total, overflow) = lease.addingReportingOverflow(retention)
        // The key expires one millisecond before the record (at least 1, which Redis requires).
        tail.append(overflow ? Int64.max / 2 : max(1, total - 1))
        tail.append("GET")
        claimPieces = (leaseDuration, retentionDuration, middle, tail.body)
        encodedAnew = true
        return (middle, tail.body)
    }

    /// A completion's retention, encoded as the completion script's two arguments (milliseconds,
    /// then the value's duration field).
    mutating func retentionArgument(_ retention: Duration) -> [UInt8] {
        if let retentionPiece, retentionPiece.retention == retention { return retentionPiece.argument }
        var argument = RedisCommand()
        RecordValue.appendRetentionArguments(milliseconds(retention), to: &argument)
        retentionPiece = (retention, argument.body)
        encodedAnew = true
        return argument.body
    }
}
