import Dedup
import Testing

@Suite("RecordID")
struct RecordIDTests {
    @Test(
        "empty, oversized and boundary identities",
        arguments: [
            ("", "k", DedupError.Code.invalidNamespace),
            ("ns", "", DedupError.Code.invalidKey),
            (String(repeating: "n", count: 129), "k", DedupError.Code.invalidNamespace),
            ("ns", String(repeating: "k", count: 513), DedupError.Code.invalidKey),
            // 171 two-byte characters are 342 bytes: fine; 257 are 514: too long.
            ("ns", String(repeating: "é", count: 257), DedupError.Code.invalidKey),
        ]
    )
    func invalid(namespace: String, key: String, code: DedupError.Code) {
        #expect {
            try RecordID(namespace: namespace, key: key)
        } throws: { error in
            (error as? DedupError)?.code == code
        }
    }

    @Test("the largest allowed parts are accepted")
    func boundaries() throws {
        _ = try RecordID(namespace: String(repeating: "n", count: 128), key: String(repeating: "k", count: 512))
    }

    @Test("delimiters, whitespace, newlines, NUL and emoji are allowed and encode injectively")
    func injective() throws {
        let pairs: [(String, String)] = [
            ("a:b", "c"), ("a", "b:c"), ("a", ":b:c"), ("a:", "b:c"), ("1:a", "b"), ("1", "a:b"),
            ("ns", "a\u{0}b"), ("ns", "a\nb"), ("ns", "a b"), ("ns", "🦄:x"), ("n\u{0}s", "k"), ("ns", "k "),
            ("dedup:ns", "k"), ("ns", "*?[]"), ("2:ns", "k"), ("ns", "2:k"),
        ]
        var seen: [String: RecordID] = [:]
        for (namespace, key) in pairs {
            let id = try RecordID(namespace: namespace, key: key)
            #expect(seen[id.encoded] == nil, "\(id) collides with \(String(describing: seen[id.encoded]))")
            seen[id.encoded] = id
            #expect(RecordID(encoded: Substring(id.encoded)) == id)
        }
    }

    @Test("random identities round-trip through the encoding and never collide")
    func randomRoundTrip() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Character] = ["a", "b", ":", "\u{0}", "\n", " ", "é", "🦄", "1", "2", "/", "*"]
        func randomString() -> String {
            String(
                (0..<Int.random(in: 1...6, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            )
        }
        var seen: [String: RecordID] = [:]
        for _ in 0..<5_000 {
            let id = try RecordID(namespace: randomString(), key: randomString())
            if let other = seen[id.encoded] { #expect(other == id) }
            seen[id.encoded] = id
            #expect(RecordID(encoded: Substring(id.encoded)) == id)
        }
    }

    @Test("canonically equivalent but different bytes are different identities, as in every store")
    func bytewiseIdentity() throws {
        let composed = try RecordID(namespace: "ns", key: "caf\u{E9}")
        let decomposed = try RecordID(namespace: "ns", key: "cafe\u{301}")
        #expect(composed != decomposed)
        #expect(Set([composed, decomposed]).count == 2)
        #expect(!composed.encoded.utf8.elementsEqual(decomposed.encoded.utf8))
    }

    @Test("malformed encodings are refused")
    func malformed() {
        for text in ["", "x", "3:ab", "3:abc", "0::k", "-1:a:k", "2:ab", "2:abk"] {
            #expect(RecordID(encoded: Substring(text)) == nil, "\(text)")
        }
    }
}
