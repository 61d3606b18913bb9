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

    @Test("times are accepted as ISO 8601 in its common spellings and as Unix milliseconds")
    func parsesTimes() {
        let noon: Int64 = 1_714_564_800_000
        #expect(Timestamp.parse("1714564800000") == noon)
        #expect(Timestamp.parse("2024-05-01T12:00:00Z") == noon)
        #expect(Timestamp.parse("2024-05-01T12:00:00.000Z") == noon)
        #expect(Timestamp.parse("2024-05-01T12:00:00.123456Z") == noon + 123)
        #expect(Timestamp.parse("2024-05-01T12:00:00.5Z") == noon + 500)
        #expect(Timestamp.parse("2024-05-01T14:00:00+02:00") == noon)
        #expect(Timestamp.parse("2024-05-01T07:30:00-0430") == noon)
        #expect(Timestamp.parse("2024-05-01 12:00") == noon)
        #expect(Timestamp.parse("2024-05-01T12:00:00") == noon)
        #expect(Timestamp.parse("2024-05-01") == noon - 12 * 3_600_000)
        for bad in ["", "yesterday", "2024-13-01", "2024-02-30", "2024-05-01T25:00", "2024-05-01T12:00:00Zjunk", "12:00", "1.5e12"] {
            #expect(Timestamp.parse(bad) == nil, "\(bad) should be refused")
        }
    }

    @Test("formatting and parsing round-trip over a wide range")
    func roundTrips() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let milliseconds = Int64.random(in: -2_000_000_000_000...8_000_000_000_000, using: &generator)
            #expect(Timestamp.parse(Timestamp.format(milliseconds: milliseconds)) == milliseconds)
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
            ("redis://host:6379/0?password=s3cret&db=1", "redis://host:6379/0?password=***&db=1"),
            ("redis://user@host:6379", "redis://user@host:6379"),
            ("unix:///run/redis@x/redis.sock", "unix:///run/redis@x/redis.sock"),
        ]
        for (url, expected) in cases {
            let location = try StoreLocation(parsing: url)
            #expect(location.description == expected)
        }
        let location = try StoreLocation(parsing: "redis://user:p%40ss@host:1/0")
        #expect(location.redactingSecrets(in: "AUTH failed for p%40ss and p@ss") == "AUTH failed for *** and ***")
        let unknown = #expect(throws: DedupError.self) { try StoreLocation(parsing: "mysql://root:hunter2@db/x") }
        #expect(unknown?.message.contains("hunter2") == false)
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
