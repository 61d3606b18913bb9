/// How a message's dedup key is found: its message ID, a business key, or any closure.
///
/// A strategy that returns `nil` or an empty string means "this message has no key", which the
/// consumer's ``MissingKeyPolicy`` decides about.
public struct KeyStrategy<Message>: Sendable {
    /// A short name for logs: `message-id`, `business-key` or `custom`.
    public let name: String
    private let derive: @Sendable (Message) -> String?

    private init(name: String, derive: @escaping @Sendable (Message) -> String?) {
        self.name = name
        self.derive = derive
    }

    /// The key of a message, or `nil` when it has none.
    public func key(for message: Message) -> String? {
        guard let key = derive(message), !key.isEmpty else { return nil }
        return key
    }

    /// The broker's message ID: dedups redeliveries and retries of the same message.
    public static func messageID(_ id: @escaping @Sendable (Message) -> String?) -> KeyStrategy {
        KeyStrategy(name: "message-id", derive: id)
    }

    /// A business key made of one or more parts (order number, payment ID, …): dedups the same
    /// business event even when a producer sent it twice under two message IDs.
    ///
    /// The parts are encoded by ``BusinessKey/encode(_:)``: each, a lone part too, is prefixed by
    /// its UTF-8 length, so `["ab", "c"]` and `["a", "bc"]` never give the same key, and neither do
    /// `["a", "b"]` and `["1:a;1:b;"]`. A message missing any part (`nil` or empty) has no key.
    public static func businessKey(_ parts: @escaping @Sendable (Message) -> [String?]) -> KeyStrategy {
        KeyStrategy(name: "business-key") { BusinessKey.encode(parts($0), part: { $0 }) }
    }

    /// Any closure.
    public static func custom(_ derive: @escaping @Sendable (Message) -> String?) -> KeyStrategy {
        KeyStrategy(name: "custom", derive: derive)
    }
}

/// How a business key's parts become one dedup key: the encoding ``KeyStrategy/businessKey(_:)``
/// uses, public so tools (`dedup-inspect --part`) find keys exactly as consumers write them.
///
/// Every part, a lone part too, is written as `<UTF-8 byte count>:<part>;`, in order:
/// `["batch-order-0", "0"]` is `13:batch-order-0;1:0;` and `["order-1"]` is `7:order-1;`.
/// The byte counts make the encoding injective whatever the parts contain (`:`, `;`, digits, NUL):
/// two different part lists never give the same key, whatever their lengths. And the encoding of a
/// key's first parts is a prefix of the key, while no key whose first parts differ starts with
/// it: `7:order-1;` prefixes every key whose first part is `order-1`, never one whose first part is
/// `order-10`.
public enum BusinessKey {
    /// The key of `parts`; `nil` when there are none or one is empty (the message has no key).
    ///
    /// The encoding of leading parts alone is the prefix that selects every key starting with them
    /// (see ``BusinessKey``).
    public static func encode(_ parts: [String]) -> String? {
        encode(parts, part: { $0 })
    }

    /// ``encode(_:)`` over parts that may be missing (`part` returns `nil`): then there is no key.
    static func encode<Parts: Collection>(_ parts: Parts, part: (Parts.Element) -> String?) -> String? {
        guard !parts.isEmpty else { return nil }
        var key = ""
        for element in parts {
            guard let part = part(element) else { return nil }
            let count = part.utf8.count
            guard count > 0 else { return nil }
            key += String(count)
            key += ":"
            key += part
            key += ";"
        }
        return key
    }
}
