import Dedup
import Foundation

/// The layout records had before ``RecordValue``'s, still read (by ``RecordValue/decode(_:id:expiresMilliseconds:)``
/// and by the scripts) so that a store written by an earlier release keeps its dedup state: its
/// completed records stay duplicates until their retention passes, and its in-flight ones are
/// completed, renewed and released by their holders and taken over, each rewrite writing the
/// current layout. Nothing writes this layout any more.
///
/// ```
/// in_flight label=<n>:<label> owner=<n>:<token> b=<t> fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp>
/// completed b=<t> fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp> created_ms=<t> completed_ms=<t> kept_ms=<ms> result=<r>
/// ```
///
/// Numbers are decimal, times Unix milliseconds. `label=<n>:<label> ` is absent from values written
/// before owner labels were kept, `b=<t> ` (the broker time) from those claimed without one or
/// written before broker times were kept. `<fp>` and `<r>` are `-` (none) or `<byte count>:<bytes>`.
/// An in-flight record's lease ends `retention_ms` before its key's `PEXPIRETIME` + 1 and it was
/// first claimed `lease_span_ms` before that; a completed one keeps its in-flight fields after the
/// owner header (their times no longer apply) and expires at `completed_ms` + `kept_ms`.
enum LegacyRecordValue {
    /// An in-flight record, read from just after `in_flight `.
    static func decodeInFlight(
        _ reader: inout RecordValue.Reader,
        id: RecordID,
        expiresMilliseconds expires: Int64
    ) -> DedupRecord? {
        var label: UnsafeBufferPointer<UInt8>?
        if reader.skip("label=") {
            guard let labelBytes = reader.lengthPrefixed(), reader.skip(" ") else { return nil }
            label = labelBytes
        }
        guard reader.skip("owner="), let owner = reader.lengthPrefixed(), reader.skip(" "),
            let broker = brokerTime(&reader), let counters = counters(&reader), reader.isAtEnd
        else { return nil }
        let leaseUntil = expires - counters.retention
        return DedupRecord(
            id: id,
            state: .inFlight,
            ownerToken: String(decoding: owner, as: UTF8.self),
            fencingToken: counters.fencing,
            attempt: Int(counters.attempt),
            createdMilliseconds: leaseUntil - counters.span,
            leaseUntilMilliseconds: leaseUntil,
            completedMilliseconds: nil,
            expiresMilliseconds: expires,
            fingerprint: counters.fingerprint.map { String(decoding: $0, as: UTF8.self) },
            result: nil,
            ownerLabel: label.map { String(decoding: $0, as: UTF8.self) },
            brokerMilliseconds: broker
        )
    }

    /// A completed record, read from just after `completed `.
    static func decodeCompleted(_ reader: inout RecordValue.Reader, id: RecordID) -> DedupRecord? {
        guard let broker = brokerTime(&reader), let counters = counters(&reader),
            reader.skip(" created_ms="), let created = reader.integer(),
            reader.skip(" completed_ms="), let completed = reader.integer(),
            reader.skip(" kept_ms="), let kept = reader.integer(),
            reader.skip(" result="), let result = reader.optional(), reader.isAtEnd
        else { return nil }
        return DedupRecord(
            id: id,
            state: .completed,
            ownerToken: nil,
            fencingToken: counters.fencing,
            attempt: Int(counters.attempt),
            createdMilliseconds: created,
            leaseUntilMilliseconds: nil,
            completedMilliseconds: completed,
            expiresMilliseconds: completed + kept,
            fingerprint: counters.fingerprint.map { String(decoding: $0, as: UTF8.self) },
            result: result.map { Data(buffer: $0) },
            ownerLabel: nil,
            brokerMilliseconds: broker
        )
    }

    /// The optional `b=<ms> ` field: `.some(nil)` when absent, `nil` when malformed.
    private static func brokerTime(_ reader: inout RecordValue.Reader) -> Int64?? {
        guard reader.skip("b=") else { return .some(nil) }
        guard let milliseconds = reader.integer(), reader.skip(" ") else { return nil }
        return .some(milliseconds)
    }

    /// `fencing=<f> attempt=<a> lease_span_ms=<ms> retention_ms=<ms> fp=<fp>`, the fields both
    /// states carry; `nil` when malformed.
    private static func counters(
        _ reader: inout RecordValue.Reader
    ) -> (fencing: Int64, attempt: Int64, span: Int64, retention: Int64, fingerprint: UnsafeBufferPointer<UInt8>?)? {
        guard reader.skip("fencing="), let fencing = reader.integer(), reader.skip(" attempt="),
            let attempt = reader.integer(),
            reader.skip(" lease_span_ms="), let span = reader.integer(), reader.skip(" retention_ms="),
            let retention = reader.integer(),
            reader.skip(" fp="), let fingerprint = reader.optional()
        else { return nil }
        return (fencing, attempt, span, retention, fingerprint)
    }
}
