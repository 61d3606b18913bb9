/// Where a store URL keeps its secrets, decided in one place: ``RedisEndpoint`` logs in with what
/// this finds, and every printed URL, error message and banner hides what this finds.
///
/// The user info is the text between `://` and its `@`. For `redis://` (and any other scheme) that
/// is the *last* `@` before the query, so a password holding an unescaped `/` or `@` still counts
/// as one. For `unix://` the path after the user info is absolute, so the user info ends at the
/// first `@/` (a socket path may hold an `@` of its own: `unix:///run/a@b/redis.sock` has none).
/// Inside the user info, the password is what follows the first `:`; without a `:` the whole user
/// info is the password (`redis://secret@host`, Redis's `AUTH password` convention).
///
/// Text that is no URL at all (a mistyped `redis:/user:pw@host`, `pw@host:6379`) is treated as if it
/// were one: everything between its first `:` (or its start) and its last `@` is hidden.
public enum URLCredentials {
    /// Where the user info is in a URL.
    struct UserInfo {
        /// The user info, without its `@`.
        var range: Range<String.Index>
        /// The password within it.
        var password: Range<String.Index>
        /// The user name within it, when there is a `:`.
        var user: Range<String.Index>?
        /// Where the rest of the URL (host, path, query) starts: just after the `@`.
        var remainder: String.Index
    }

    /// The user info of `text`, or `nil` when it has none.
    static func userInfo(in text: String) -> UserInfo? {
        let start: String.Index
        let end: String.Index?
        if let schemeEnd = text.range(of: "://") {
            start = schemeEnd.upperBound
            let rest = text[start...]
            let queryStart = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? rest.endIndex
            if text[..<schemeEnd.lowerBound].lowercased() == "unix" {
                guard !rest.hasPrefix("/") else { return nil }
                end = rest[..<queryStart].range(of: "@/")?.lowerBound ?? rest[..<queryStart].lastIndex(of: "@")
            } else {
                end = rest[..<queryStart].lastIndex(of: "@")
            }
        } else {
            let queryStart = text.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? text.endIndex
            end = text[..<queryStart].lastIndex(of: "@")
            start =
                text[..<(end ?? text.startIndex)].firstIndex(of: ":").map { text.index(after: $0) } ?? text.startIndex
        }
        guard let end else { return nil }
        let range = start..<end
        let remainder = text.index(after: end)
        guard let colon = text[range].firstIndex(of: ":") else {
            return UserInfo(range: range, password: range, user: nil, remainder: remainder)
        }
        return UserInfo(
            range: range,
            password: text.index(after: colon)..<end,
            user: start..<colon,
            remainder: remainder
        )
    }

    /// The values of query items named like secrets (`password=`, `auth=`, ...).
    private static func secretQueryValues(in text: String) -> [Range<String.Index>] {
        guard let question = text.firstIndex(of: "?") else { return [] }
        let queryEnd = text[question...].firstIndex(of: "#") ?? text.endIndex
        var ranges: [Range<String.Index>] = []
        var itemStart = text.index(after: question)
        while itemStart < queryEnd {
            let itemEnd = text[itemStart..<queryEnd].firstIndex(of: "&") ?? queryEnd
            if let equals = text[itemStart..<itemEnd].firstIndex(of: "=") {
                let name = text[itemStart..<equals].lowercased()
                if ["password", "pass", "auth", "requirepass", "secret"].contains(name) {
                    ranges.append(text.index(after: equals)..<itemEnd)
                }
            }
            itemStart = itemEnd < queryEnd ? text.index(after: itemEnd) : queryEnd
        }
        return ranges.filter { !$0.isEmpty }
    }

    /// The ranges of `text` that hold secrets, last first.
    private static func secretRanges(in text: String) -> [Range<String.Index>] {
        var ranges = secretQueryValues(in: text)
        if let userInfo = userInfo(in: text), !userInfo.password.isEmpty { ranges.append(userInfo.password) }
        return ranges.sorted { $0.lowerBound > $1.lowerBound }
    }

    /// `text` (a store URL, or what was meant as one) with every secret replaced by `***`: the
    /// spelling of a URL that is safe to print and log.
    public static func redacting(_ text: String) -> String {
        var redacted = text
        for range in secretRanges(in: text) {
            redacted.replaceSubrange(range, with: "***")
        }
        return redacted
    }

    /// The secrets of `text`, as written and percent-decoded, longest first: what must not appear
    /// in any message about it.
    public static func secrets(in text: String) -> [String] {
        var found = secretRanges(in: text).map { String(text[$0]) }
        found += found.compactMap { percentDecoded(Substring($0)) }
        return Array(Set(found)).filter { !$0.isEmpty }.sorted { $0.count > $1.count }
    }

    /// `text` with every occurrence of the given secrets replaced by `***`.
    public static func removing(_ secrets: [String], from text: String) -> String {
        var text = text
        for secret in secrets.sorted(by: { $0.count > $1.count }) where !secret.isEmpty {
            text = text.replacing(secret, with: "***")
        }
        return text
    }

    /// Decodes `%XX` escapes; `nil` when one is malformed or the bytes are not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
