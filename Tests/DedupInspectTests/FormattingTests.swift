import Dedup
import Foundation
import Testing

@testable import DedupInspect
@testable import DedupStoreLocator

@Suite("Times, JSON text and redaction")
struct FormattingTests {
    @Test("times print as UTC ISO 8601 with milliseconds")
    func formatsTimes() {
        #expect(Timestamp.format(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.format(milliseconds: 1_714_564_800_123) == "2024-05-01T12:00:00.123Z")
        #expect(Timestamp.format(milliseconds: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(Timestamp.format(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
    }

    @Test("times are accepted as ISO 8601 with a zone and as Unix time with a unit")
    func parsesTimes() throws {
        let noon: Int64 = 1_714_564_800_000
        #expect(try Timestamp.parse("1714564800000ms") == noon)
        #expect(try Timestamp.parse("1714564800s") == noon)
        #expect(try Timestamp.parse("-1000ms") == -1000)
        // A bare number is milliseconds only where it cannot be seconds: 12 to 14 digits.
        #expect(try Timestamp.parse("1714564800000") == noon)
        #expect(try Timestamp.parse("2024-05-01T12:00:00Z") == noon)
        #expect(try Timestamp.parse("2024-05-01T12:00:00.000Z") == noon)
        #expect(try Timestamp.parse("2024-05-01T12:00:00.123456Z") == noon + 123)
        #expect(try Timestamp.parse("2024-05-01T12:00:00.5Z") == noon + 500)
        #expect(try Timestamp.parse("2024-05-01T14:00:00+02:00") == noon)
        #expect(try Timestamp.parse("2024-05-01T07:30:00-0430") == noon)
        #expect(try Timestamp.parse("2024-05-01 12:00z") == noon)
        for bad in [
            "", "yesterday", "2024-13-01T00:00Z", "2024-02-30T00:00Z", "2024-05-01T25:00Z", "2024-05-01T12:00:00Zjunk",
            "12:00", "1.5e12", "12ks", "s", "ms",
        ] {
            #expect(throws: DedupError.self, "\(bad) should be refused") { try Timestamp.parse(bad) }
        }
    }

    @Test("a bare number that may be seconds, and a time without a zone, are refused with a hint")
    func refusesAmbiguousTimes() throws {
        // `date +%s`: read as milliseconds it would be 1970-01-21 and select nearly everything.
        let seconds = try #require(#expect(throws: DedupError.self) { try Timestamp.parse("1796574600") })
        #expect(seconds.code == .invalidConfiguration)
        #expect(seconds.message.contains("1796574600s"), "\(seconds.message)")
        #expect(seconds.message.contains("1796574600ms"), "\(seconds.message)")
        #expect(seconds.message.contains(Timestamp.format(milliseconds: 1_796_574_600_000)), "\(seconds.message)")
        #expect(seconds.message.contains(Timestamp.format(milliseconds: 1_796_574_600)), "\(seconds.message)")
        // `date +%s%N` and microseconds are no milliseconds either.
        for tooLong in ["1796574600000000", "1796574600000000000"] {
            let error = try #require(#expect(throws: DedupError.self) { try Timestamp.parse(tooLong) })
            #expect(error.message.contains("ms"), "\(error.message)")
        }
        let zoneless = try #require(#expect(throws: DedupError.self) { try Timestamp.parse("2024-05-01T12:00:00") })
        #expect(zoneless.message.contains("2024-05-01T12:00:00Z"), "\(zoneless.message)")
        #expect(zoneless.message.contains("+02:00"), "\(zoneless.message)")
        let date = try #require(#expect(throws: DedupError.self) { try Timestamp.parse("2024-05-01") })
        #expect(date.message.contains("2024-05-01T00:00:00Z"), "\(date.message)")
        let garbage = try #require(#expect(throws: DedupError.self) { try Timestamp.parse("last tuesday") })
        #expect(garbage.message.contains("1714564800s"), "\(garbage.message)")
    }

    @Test("formatting and parsing round-trip over a wide range")
    func roundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let milliseconds = Int64.random(in: -2_000_000_000_000...8_000_000_000_000, using: &generator)
            #expect(try Timestamp.parse(Timestamp.format(milliseconds: milliseconds)) == milliseconds)
        }
    }

    @Test("JSON strings keep every character and escape control characters")
    func jsonEscapes() throws {
        let awkward = "a\"b\\c\nd\u{0}e\u{1F}f 🎉 ünï"
        let text = JSONValue.object([("key", .string(awkward)), ("n", .int(-5)), ("none", .null)]).rendered
        let decoded = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(decoded?["key"] as? String == awkward)
        #expect(text.hasPrefix("{\"key\":"))
        #expect(!text.contains("\n"))
    }

    @Test("passwords in store URLs are redacted, wherever they appear")
    func redactsPasswords() throws {
        let cases: [(String, String)] = [
            ("redis://user:s3cret@localhost:6379/0", "redis://user:***@localhost:6379/0"),
            ("redis://:s3cret@localhost:6379", "redis://:***@localhost:6379"),
            ("rediss://user:pa/ss@wo@rd@host:6380/1", "rediss://user:***@host:6380/1"),
            ("redis://pa/ss@wo@rd@host:6380/1", "redis://***@host:6380/1"),
            ("redis://host:6379/0?password=s3cret&db=1", "redis://host:6379/0?password=***&db=1"),
            // Redis reads a user info without a colon as a password (AUTH password).
            ("redis://Hunter2Secret@host:6379", "redis://***@host:6379"),
            ("unix://Hunter2Secret@/run/redis.sock", "unix://***@/run/redis.sock"),
            ("unix://:pa/ss@/run/redis.sock", "unix://:***@/run/redis.sock"),
            ("unix:///run/redis@x/redis.sock", "unix:///run/redis@x/redis.sock"),
        ]
        for (url, expected) in cases {
            let location = try StoreLocation(parsing: url)
            #expect(location.description == expected)
        }
        let location = try StoreLocation(parsing: "redis://user:p%40ss@host:1/0")
        #expect(location.redactingSecrets(in: "AUTH failed for p%40ss and p@ss") == "AUTH failed for *** and ***")
        let passwordOnly = try StoreLocation(parsing: "redis://Hunter2Secret@host:1/0")
        #expect(passwordOnly.redactingSecrets(in: "AUTH Hunter2Secret") == "AUTH ***")
        for unknownStore in ["mysql://root:hunter2@db/x", "redis:/root:hunter2@db", "hunter2@db:6379"] {
            let unknown = #expect(throws: DedupError.self) { try StoreLocation(parsing: unknownStore) }
            #expect(unknown?.message.contains("hunter2") == false, "\(unknown?.message ?? "")")
        }

    }

    @Test("durations and counts read well")
    func humanReadable() {
        #expect(humanDuration(milliseconds: 850) == "850ms")
        #expect(humanDuration(milliseconds: 12_345) == "12.3s")
        #expect(humanDuration(milliseconds: 245_000) == "4m05s")
        #expect(humanDuration(milliseconds: 3 * 86_400_000 + 4 * 3_600_000) == "3d04h")
        #expect(grouped(1_000_000) == "1,000,000")
        #expect(grouped(999) == "999")
        #expect(displayed("plain-key") == "plain-key")
        #expect(displayed("line\nbreak") == "\"line\\nbreak\"")
    }
}
