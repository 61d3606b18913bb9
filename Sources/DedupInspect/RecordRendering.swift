import Dedup
import Foundation

/// How records look in both formats. JSON keys are part of the tool's contract: add, never rename.
enum RecordRendering {
    /// A record as a JSON object: every field, times as ISO 8601 and as Unix milliseconds, the
    /// result's size, and (for `show`) the result itself in base64.
    static func json(_ record: DedupRecord, now: Int64, includeResult: Bool) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("namespace", .string(record.id.namespace)),
            ("key", .string(record.id.key)),
            ("state", .string(record.state.rawValue)),
            ("owner_token", .string(record.ownerToken)),
            ("owner_label", .string(record.ownerLabel)),
            ("fencing_token", .int(record.fencingToken)),
            ("attempt", .int(Int64(record.attempt))),
            ("created_at", .time(record.createdAt)),
            ("created_at_ms", .milliseconds(record.createdAt)),
            ("lease_until", .time(record.leaseUntil)),
            ("lease_until_ms", .milliseconds(record.leaseUntil)),
            ("lease_remaining_ms", record.leaseUntil.map { .int($0.millisecondsSince1970 - now) } ?? .null),
            ("completed_at", .time(record.completedAt)),
            ("completed_at_ms", .milliseconds(record.completedAt)),
            ("expires_at", .time(record.expiresAt)),
            ("expires_at_ms", .milliseconds(record.expiresAt)),
            ("broker_time", .time(record.brokerTime)),
            ("broker_time_ms", .milliseconds(record.brokerTime)),
            ("fingerprint", .string(record.fingerprint)),
            ("result_size", .int(record.result?.count)),
        ]
        if includeResult {
            members.append(("result_base64", .string(record.result?.base64EncodedString())))
        }
        return .object(members)
    }

    /// The columns of `list`'s table. The key comes last so a long key never misaligns the rest.
    static let listHeaders = ["STATE", "FENCING", "ATTEMPT", "TIME", "BROKER_TIME", "EXPIRES", "NAMESPACE", "KEY"]
    static let listRightAligned: Set<Int> = [1, 2]

    /// A record as a row of `list`'s table; TIME is the completion time, or the claim time while in
    /// flight, and BROKER_TIME when the broker took the message (`-` when the claim gave none).
    /// `--from`/`--until` select by BROKER_TIME where a record has one, by TIME otherwise.
    static func listRow(_ record: DedupRecord) -> [String] {
        [
            record.state.rawValue,
            String(record.fencingToken),
            String(record.attempt),
            Timestamp.format(record.recordTime),
            record.brokerTime.map(Timestamp.format) ?? "-",
            Timestamp.format(record.expiresAt),
            displayed(record.id.namespace),
            displayed(record.id.key),
        ]
    }

    /// A record as labelled lines for `show`.
    static func detail(_ record: DedupRecord, now: Int64) -> String {
        func time(_ date: Date?, relative: Bool = false) -> String {
            guard let date else { return "-" }
            let text = Timestamp.format(date)
            guard relative else { return text }
            let delta = date.millisecondsSince1970 - now
            return text
                + (delta >= 0
                    ? " (in \(humanDuration(milliseconds: delta)))" : " (\(humanDuration(milliseconds: -delta)) ago)")
        }
        let fields: [(String, String)] = [
            ("namespace", displayed(record.id.namespace)),
            ("key", displayed(record.id.key)),
            ("state", record.state.rawValue),
            ("owner label", record.ownerLabel.map(displayed) ?? "-"),
            ("owner token", record.ownerToken ?? "-"),
            ("fencing token", String(record.fencingToken)),
            ("attempt", String(record.attempt)),
            ("created at", time(record.createdAt)),
            ("lease until", time(record.leaseUntil, relative: true)),
            ("completed at", time(record.completedAt)),
            ("expires at", time(record.expiresAt, relative: true)),
            ("broker time", time(record.brokerTime)),
            ("fingerprint", record.fingerprint.map(displayed) ?? "-"),
            ("result", record.result.map { "\(grouped($0.count)) bytes" } ?? "none"),
        ]
        let width = fields.map(\.0.count).max()! + 1
        return fields.map { label, value in
            (label + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0) + value
        }.joined(separator: "\n") + "\n"
    }
}
