import Foundation

/// A JSON value with keys in the order they were given, so every document `dedup-inspect` prints has
/// the same keys in the same order. Rendered by hand: a million records go through here.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    /// A number with a fraction (latencies in milliseconds); not finite renders as `null`.
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// `.string`, or `.null` for `nil`.
    static func string(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
    /// `.int`, or `.null` for `nil`.
    static func int(_ value: Int?) -> JSONValue { value.map { .int(Int64($0)) } ?? .null }
    /// The time as an ISO 8601 string, or `.null`.
    static func time(_ date: Date?) -> JSONValue { date.map { .string(Timestamp.format($0)) } ?? .null }
    /// The time as Unix milliseconds, or `.null`.
    static func milliseconds(_ date: Date?) -> JSONValue { date.map { .int($0.millisecondsSince1970) } ?? .null }

    /// The value as a person reads it in a text table: strings as they are, anything else as JSON.
    var plainText: String {
        if case .string(let value) = self { return value }
        return rendered
    }

    /// Compact JSON text.
    public var rendered: String {
        var text = ""
        render(into: &text)
        return text
    }

    /// Appends compact JSON text.
    public func render(into text: inout String) {
        switch self {
        case .null: text += "null"
        case .bool(let value): text += value ? "true" : "false"
        case .int(let value): text += String(value)
        case .number(let value): text += value.isFinite ? String(value) : "null"
        case .string(let value): Self.appendString(value, to: &text)
        case .array(let values):
            text += "["
            for (index, value) in values.enumerated() {
                if index > 0 { text += "," }
                value.render(into: &text)
            }
            text += "]"
        case .object(let members):
            text += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { text += "," }
                Self.appendString(key, to: &text)
                text += ":"
                value.render(into: &text)
            }
            text += "}"
        }
    }

    /// Appends a JSON string literal; every Unicode scalar is kept (keys may hold anything), control
    /// characters are escaped.
    static func appendString(_ value: String, to text: inout String) {
        text += "\""
        // Most strings need no escaping: append them whole (per-scalar appends cost ~10x more).
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x7F }) {
            text += value
            text += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default:
                text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool { lhs.rendered == rhs.rendered }
}
