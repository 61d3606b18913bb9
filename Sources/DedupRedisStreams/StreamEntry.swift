import Dedup
import Foundation

/// A stream entry's ID, `<milliseconds>-<sequence>`: the time the server added the entry (its own
/// clock) and a counter among entries of the same millisecond.
public struct StreamEntryID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The server's time when it added the entry, in milliseconds since 1970: the broker time.
    public var milliseconds: UInt64
    /// The entry's number among those added in the same millisecond.
    public var sequence: UInt64

    /// Creates an ID from its parts.
    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Parses `<milliseconds>-<sequence>` (or `<milliseconds>`, sequence 0); `nil` for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let milliseconds = parts.first.flatMap({ UInt64($0) }) else { return nil }
        if parts.count == 1 {
            self.init(milliseconds: milliseconds, sequence: 0)
            return
        }
        guard let sequence = UInt64(parts[1]) else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    /// `0-0`, the ID before every entry.
    public static let zero = StreamEntryID(milliseconds: 0, sequence: 0)

    /// The entry's broker time: ``milliseconds`` as a date.
    public var brokerTime: Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    /// The last ID before the first one a server could give at `date` (`<ms>-0`, `ms` rounded
    /// down): a group positioned here is next given the entries added at `date` and later, the
    /// ones at `date` itself included (positioning at `<ms>-0` would skip an entry with that ID).
    public static func justBefore(_ date: Date) -> StreamEntryID {
        justBefore(milliseconds: UInt64(max(0, (date.timeIntervalSince1970 * 1000).rounded(.down))))
    }

    /// ``justBefore(_:)`` for a time in milliseconds since 1970, as an operator gives it: `0-0` for 0.
    package static func justBefore(milliseconds: UInt64) -> StreamEntryID {
        guard milliseconds > 0 else { return .zero }
        return StreamEntryID(milliseconds: milliseconds - 1, sequence: .max)
    }

    /// `<milliseconds>-<sequence>`, as Redis writes it.
    public var description: String { "\(milliseconds)-\(sequence)" }

    /// Orders IDs as the stream does: by time, then sequence.
    public static func < (lhs: StreamEntryID, rhs: StreamEntryID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}

/// One entry read from a stream: its ID and its fields, in the order the producer gave them.
public struct StreamEntry: Hashable, Sendable {
    /// One field of an entry. Names and values are bytes, as Redis keeps them.
    public struct Field: Hashable, Sendable {
        /// The field's name.
        public var name: [UInt8]
        /// The field's value.
        public var value: [UInt8]

        /// Creates a field.
        public init(name: [UInt8], value: [UInt8]) {
            self.name = name
            self.value = value
        }

        /// Creates a field from text.
        public init(_ name: String, _ value: String) {
            self.init(name: Array(name.utf8), value: Array(value.utf8))
        }
    }

    /// The entry's ID; its milliseconds are the broker time.
    public var id: StreamEntryID
    /// The entry's fields, in order.
    public var fields: [Field]

    /// Creates an entry.
    public init(id: StreamEntryID, fields: [Field]) {
        self.id = id
        self.fields = fields
    }

    /// The value of the first field called `name`, as UTF-8 text (invalid bytes replaced); `nil`
    /// when the entry has no such field.
    public subscript(name: String) -> String? {
        value(of: name).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The bytes of the first field called `name`; `nil` when the entry has no such field.
    public func value(of name: String) -> [UInt8]? {
        let name = Array(name.utf8)
        return fields.first { $0.name == name }?.value
    }
}

extension KeyStrategy where Message == StreamEntry {
    /// The entry's ID as the dedup key: dedups redeliveries of one entry (a reclaimed entry, a
    /// group moved back), not a producer that published the same event twice.
    public static var entryID: KeyStrategy<StreamEntry> {
        .messageID { $0.id.description }
    }

    /// The value of the field `name` (an order number, a payment ID) as the dedup key: dedups the
    /// same business event published twice under two entry IDs, as a producer's retry does. An
    /// entry without the field (or with it empty) has no key, which the consumer's
    /// ``/Dedup/MissingKeyPolicy`` decides about.
    public static func field(_ name: String) -> KeyStrategy<StreamEntry> {
        .businessKey { [$0[name]] }
    }
}
