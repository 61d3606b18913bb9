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
    /// Several parts are joined injectively (each is prefixed by its UTF-8 length), so
    /// `["ab", "c"]` and `["a", "bc"]` never give the same key. A message missing any part has no key.
    public static func businessKey(_ parts: @escaping @Sendable (Message) -> [String?]) -> KeyStrategy {
        KeyStrategy(name: "business-key") { message in
            let parts = parts(message)
            guard !parts.isEmpty else { return nil }
            var key = ""
            for part in parts {
                guard let part, !part.isEmpty else { return nil }
                if parts.count == 1 { return part }
                key += "\(part.utf8.count):\(part);"
            }
            return key
        }
    }

    /// Any closure.
    public static func custom(_ derive: @escaping @Sendable (Message) -> String?) -> KeyStrategy {
        KeyStrategy(name: "custom", derive: derive)
    }
}
