import Dedup
import DedupTestKit
import Testing

@Suite("Business keys")
struct BusinessKeyTests {
    let strategy = KeyStrategy<[String?]>.businessKey { $0 }

    @Test("a one-part key never equals a multi-part key whose encoding it spells out")
    func onePartAgainstSeveral() {
        #expect(strategy.key(for: ["1:a;1:b;"]) != strategy.key(for: ["a", "b"]))
        #expect(strategy.key(for: ["2:ab;"]) != strategy.key(for: ["ab"]))
        #expect(strategy.key(for: ["ab", "c"]) != strategy.key(for: ["a", "bc"]))
    }

    @Test("every part is written as <UTF-8 byte count>:<part>;, a lone part too; a missing or empty part means no key")
    func encoding() {
        #expect(strategy.key(for: ["order-1"]) == "7:order-1;")
        #expect(strategy.key(for: ["batch-order-0", "0"]) == "13:batch-order-0;1:0;")
        #expect(strategy.key(for: ["é", "🦄"]) == "2:é;4:🦄;")
        #expect(strategy.key(for: ["order-1", nil]) == nil)
        #expect(strategy.key(for: ["order-1", ""]) == nil)
        #expect(strategy.key(for: []) == nil)
        #expect(BusinessKey.encode([]) == nil)
        #expect(BusinessKey.encode(["a", ""]) == nil)
        #expect(KeyStrategy<String>.custom { _ in "" }.key(for: "x") == nil)
    }

    @Test("random part lists decode back to themselves and never share a key (seeded)")
    func injective() {
        var random = SplitMix64(seed: 14)
        var seen: [[UInt8]: [String]] = [:]
        for round in 0..<20_000 {
            var parts = random.parts()
            // Every fourth list is one part spelling out another list's key: the lists a key
            // returned as is would collide with.
            if round % 4 == 0 { parts = [Self.spelledOut(parts)] }
            let key = strategy.key(for: parts)
            #expect(key == BusinessKey.encode(parts), "the strategy encodes as BusinessKey.encode does")
            guard let key else {
                Issue.record("no key for \(parts)")
                continue
            }
            #expect(key == Self.spelledOut(parts), "the documented layout")
            #expect(Self.decode(key) == parts, "\(key.debugDescription) does not decode to \(parts)")
            let bytes = Array(key.utf8)
            if let other = seen[bytes], !Self.sameBytes(other, parts) {
                Issue.record("\(parts) and \(other) share the key \(key.debugDescription)")
            }
            seen[bytes] = parts
        }
    }

    @Test("the encoding of leading parts prefixes exactly the keys that start with those parts (seeded)")
    func leadingPartsPrefix() throws {
        let batchOrder1 = try #require(BusinessKey.encode(["batch-order-1"]))
        #expect(BusinessKey.encode(["batch-order-1", "7"])!.utf8.starts(with: batchOrder1.utf8))
        #expect(!BusinessKey.encode(["batch-order-10", "7"])!.utf8.starts(with: batchOrder1.utf8))
        #expect(!BusinessKey.encode(["batch-order-1;", "7"])!.utf8.starts(with: batchOrder1.utf8))

        var random = SplitMix64(seed: 5)
        for _ in 0..<20_000 {
            let leading = random.parts()
            // Half of the keys start with `leading`, the others are random.
            let whole = random.next() % 2 == 0 ? leading + random.parts() : random.parts()
            let prefix = BusinessKey.encode(leading)!
            let key = BusinessKey.encode(whole)!
            let startsWithParts =
                whole.count >= leading.count && Self.sameBytes(Array(whole.prefix(leading.count)), leading)
            #expect(
                key.utf8.starts(with: prefix.utf8) == startsWithParts,
                "\(whole) against the leading parts \(leading)"
            )
        }
    }

    /// The documented layout, written out independently of the library.
    static func spelledOut(_ parts: [String]) -> String {
        parts.map { "\($0.utf8.count):\($0);" }.joined()
    }

    /// The parts of a business key, read by the documented layout; `nil` when it is not one.
    static func decode(_ key: String) -> [String]? {
        var bytes = Substring(key).utf8[...]
        var parts: [String] = []
        while !bytes.isEmpty {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
                let count = Int(String(decoding: bytes[..<colon], as: UTF8.self)),
                count > 0
            else { return nil }
            let start = bytes.index(after: colon)
            guard let end = bytes.index(start, offsetBy: count, limitedBy: bytes.endIndex), end < bytes.endIndex,
                bytes[end] == UInt8(ascii: ";")
            else { return nil }
            parts.append(String(decoding: bytes[start..<end], as: UTF8.self))
            bytes = bytes[bytes.index(after: end)...]
        }
        return parts.isEmpty ? nil : parts
    }

    /// Part lists compared by UTF-8 bytes, as stores compare keys.
    static func sameBytes(_ lhs: [String], _ rhs: [String]) -> Bool {
        lhs.count == rhs.count && zip(lhs, rhs).allSatisfy { $0.utf8.elementsEqual($1.utf8) }
    }
}

/// Seeded: the same part lists on every run, so a failure can be reproduced.
extension SplitMix64 {

    /// One to four non-empty parts over an alphabet rich in the encoding's own characters (digits,
    /// `:` and `;`), so parts that look like encodings are common.
    fileprivate mutating func parts() -> [String] {
        let alphabet: [Character] = ["1", "2", "0", ":", ";", "a", "b", " ", "\u{0}", "é", "🦄", "\n"]
        return (0..<Int.random(in: 1...4, using: &self)).map { _ in
            String((0..<Int.random(in: 1...6, using: &self)).map { _ in alphabet.randomElement(using: &self)! })
        }
    }
}
