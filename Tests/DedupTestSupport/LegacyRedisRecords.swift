import Foundation

/// Redis record values exactly as the release before the compact value layout wrote them: each
/// (but ``inFlightUnlabelled``, the layout of the release before owner labels) was produced by that
/// release's `RedisDedupStore` (its claim, renewal, takeover and completion scripts) and copied
/// here byte for byte, so tests can fill a store as an upgraded deployment finds it. The claims kept records for 100 years, so the completed ones stay live; the in-flight
/// ones hang off their key's expiry, which a test chooses (``RedisServer/setLegacy(_:at:expiringIn:)``).
public struct LegacyRedisRecord: Sendable {
    /// The value, byte for byte.
    public var value: [UInt8]
    /// The holder's owner token and label (in flight only; the label `nil` for a value written
    /// before labels were kept).
    public var ownerToken: String?
    public var ownerLabel: String?
    /// The key's `PEXPIRETIME` as that release set it (completed only: the record's last live
    /// millisecond).
    public var lastLiveMillisecond: Int64?

    /// The retention the records were claimed with: 100 years, in milliseconds.
    public static let retentionMilliseconds: Int64 = 3_155_760_000_000

    /// In flight, as the first claim wrote it: a label, no broker time, no fingerprint.
    public static let inFlightPlain = LegacyRedisRecord(
        "in_flight label=15:web-7.prod:4711 owner=32:9036529ddfe5997bcee1c19d49e1a4b9 fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3155760000000 fp=-",
        token: "9036529ddfe5997bcee1c19d49e1a4b9",
        label: "web-7.prod:4711"
    )
    /// In flight with a broker time (1600000000123) and a fingerprint (`fp 42`), the label holding a space.
    public static let inFlightBrokerFingerprint = LegacyRedisRecord(
        "in_flight label=5:pod a owner=32:3f40cb791dae4ef02c93b0b8df2e3a71 b=1600000000123 fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3155760000000 fp=5:fp 42",
        token: "3f40cb791dae4ef02c93b0b8df2e3a71",
        label: "pod a"
    )
    /// ``inFlightBrokerFingerprint`` after a renewal of 60 s.
    public static let inFlightRenewed = LegacyRedisRecord(
        "in_flight label=5:pod a owner=32:3f40cb791dae4ef02c93b0b8df2e3a71 b=1600000000123 fencing=1 attempt=1 lease_span_ms=60011 retention_ms=3155760000000 fp=5:fp 42",
        token: "3f40cb791dae4ef02c93b0b8df2e3a71",
        label: "pod a"
    )
    /// In flight after a takeover (fencing 2, attempt 2), keeping the broker time 1700000000000.
    public static let inFlightTakenOver = LegacyRedisRecord(
        "in_flight label=5:pod-b owner=32:3fcc358a375ac6fbcef30c71a0676b6a b=1700000000000 fencing=2 attempt=2 lease_span_ms=30021 retention_ms=3155760000000 fp=-",
        token: "3fcc358a375ac6fbcef30c71a0676b6a",
        label: "pod-b"
    )
    /// In flight as written before owner labels were kept (fencing 3, attempt 2), 5 s of lease span.
    public static let inFlightUnlabelled = LegacyRedisRecord(
        "in_flight owner=32:abababababababababababababababab fencing=3 attempt=2 lease_span_ms=5000 retention_ms=3155760000000 fp=-",
        token: "abababababababababababababababab",
        label: nil
    )

    /// ``inFlightPlain`` completed: first claimed 1796592678019, completed 1796592678100.
    public static let completedPlain = LegacyRedisRecord(
        "completed fencing=1 attempt=1 lease_span_ms=30000 retention_ms=3155760000000 fp=- created_ms=1796592678019 completed_ms=1796592678100 kept_ms=3155760000000 result=-",
        lastLiveMillisecond: 4_952_352_678_099
    )
    /// ``inFlightRenewed`` completed with a binary result (`00 01 02 ff 20 0a 2d`): broker time
    /// 1600000000123, fingerprint `fp 42`, first claimed 1796592678033, completed 1796592678121.
    public static let completedBrokerFingerprintResult = LegacyRedisRecord(
        Array(
            "completed b=1600000000123 fencing=1 attempt=1 lease_span_ms=60011 retention_ms=3155760000000 fp=5:fp 42 created_ms=1796592678033 completed_ms=1796592678121 kept_ms=3155760000000 result=7:"
                .utf8
        )
            + [0, 1, 2, 255, 32, 10, 45],
        lastLiveMillisecond: 4_952_352_678_120
    )
    /// ``inFlightTakenOver`` completed by a lease that did not say when it was first claimed, with
    /// the result `ok`: first claimed 1796592678060, completed 1796592678136.
    public static let completedTakenOver = LegacyRedisRecord(
        "completed b=1700000000000 fencing=2 attempt=2 lease_span_ms=30021 retention_ms=3155760000000 fp=- created_ms=1796592678060 completed_ms=1796592678136 kept_ms=3155760000000 result=2:ok",
        lastLiveMillisecond: 4_952_352_678_135
    )

    init(_ value: String, token: String? = nil, label: String? = nil, lastLiveMillisecond: Int64? = nil) {
        self.init(Array(value.utf8), token: token, label: label, lastLiveMillisecond: lastLiveMillisecond)
    }

    init(_ value: [UInt8], token: String? = nil, label: String? = nil, lastLiveMillisecond: Int64? = nil) {
        self.value = value
        self.ownerToken = token
        self.ownerLabel = label
        self.lastLiveMillisecond = lastLiveMillisecond
    }
}

extension RedisServer {
    /// Writes a legacy record at `key` (through `redis-cli`, the value as a Lua string so any byte
    /// passes). A completed record expires as that release set it; an in-flight one `expiringIn`
    /// milliseconds from now (its lease ends a retention, 100 years, before that).
    public func setLegacy(
        _ record: LegacyRedisRecord,
        at key: String,
        expiringIn milliseconds: Int64? = nil
    ) async throws {
        let literal = record.value.map { byte -> String in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return String(UnicodeScalar(byte))
            default:
                // Three digits always, so a digit after an escape is not read as part of it.
                let digits = String(byte)
                return "\\" + String(repeating: "0", count: 3 - digits.count) + digits
            }
        }.joined()
        if let last = record.lastLiveMillisecond {
            try await cli(
                "EVAL",
                "return redis.call('SET', KEYS[1], '\(literal)', 'PXAT', ARGV[1])",
                "1",
                key,
                String(last)
            )
        } else {
            let expiry = milliseconds ?? LegacyRedisRecord.retentionMilliseconds + 60_000
            try await cli(
                "EVAL",
                "return redis.call('SET', KEYS[1], '\(literal)', 'PX', ARGV[1])",
                "1",
                key,
                String(expiry)
            )
        }
    }
}
