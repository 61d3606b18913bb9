/// The identity of a dedup record: who consumes (`namespace`) and which message (`key`).
///
/// The same key in two namespaces is two records, so two consumer groups each apply a message once
/// and replaying one group never touches another. Both parts are non-empty UTF-8 strings of bounded
/// length; any character is allowed, including delimiters, spaces, newlines, NUL and emoji.
public struct RecordID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The largest namespace, in UTF-8 bytes.
    public static let maximumNamespaceBytes = 128
    /// The largest key, in UTF-8 bytes. ``IdentityLimits`` may lower it, never raise it.
    public static let maximumKeyBytes = 512

    /// Who consumes: usually the consumer group or service name, optionally with the topic.
    public let namespace: String
    /// The message ID or business key.
    public let key: String

    /// Validates and creates an identity.
    ///
    /// - Throws: ``DedupError`` with code ``DedupError/Code/invalidNamespace`` or
    ///   ``DedupError/Code/invalidKey`` when a part is empty or too long.
    public init(namespace: String, key: String, limits: IdentityLimits = .default) throws(DedupError) {
        try Self.validate(namespace: namespace)
        let keyBytes = key.utf8.count
        if keyBytes == 0 {
            throw DedupError(.invalidKey, "the dedup key is empty")
        }
        if keyBytes > limits.maximumKeyBytes {
            throw DedupError(
                .invalidKey,
                "the dedup key is \(keyBytes) UTF-8 bytes; the limit is \(limits.maximumKeyBytes)"
            )
        }
        self.namespace = namespace
        self.key = key
    }

    /// Creates an identity without validation, for stores decoding identities they wrote themselves.
    public init(uncheckedNamespace namespace: String, key: String) {
        self.namespace = namespace
        self.key = key
    }

    /// Checks a namespace on its own, so a consumer can refuse a bad one when it is created.
    public static func validate(namespace: String) throws(DedupError) {
        let bytes = namespace.utf8.count
        if bytes == 0 {
            throw DedupError(.invalidNamespace, "the namespace is empty")
        }
        if bytes > maximumNamespaceBytes {
            throw DedupError(
                .invalidNamespace,
                "the namespace is \(bytes) UTF-8 bytes; the limit is \(maximumNamespaceBytes)"
            )
        }
    }

    /// An injective encoding of the identity as one string: `<namespace byte count>:<namespace>:<key>`.
    ///
    /// The byte-count prefix makes the encoding injective whatever the parts contain (two different
    /// identities never share an encoding), and it stays readable: `12:orders-group:order-42`.
    /// Stores that keep one string per record (Redis) use it after their own prefix.
    public var encoded: String {
        "\(namespace.utf8.count):\(namespace):\(key)"
    }

    /// Decodes ``encoded``; `nil` when the text is not such an encoding.
    public init?(encoded text: Substring) {
        guard let colon = text.utf8.firstIndex(of: UInt8(ascii: ":")),
            let count = Int(text[text.startIndex..<colon]), count > 0
        else { return nil }
        let utf8 = text.utf8
        let namespaceStart = utf8.index(after: colon)
        guard let namespaceEnd = utf8.index(namespaceStart, offsetBy: count, limitedBy: utf8.endIndex),
            namespaceEnd < utf8.endIndex, utf8[namespaceEnd] == UInt8(ascii: ":")
        else { return nil }
        let keyStart = utf8.index(after: namespaceEnd)
        guard keyStart < utf8.endIndex,
            let namespace = String(utf8[namespaceStart..<namespaceEnd]),
            let key = String(utf8[keyStart...])
        else { return nil }
        self.init(uncheckedNamespace: namespace, key: key)
    }

    /// Equal when both parts have the same UTF-8 bytes. Swift's `String` equality would call
    /// "é" and "e\u{301}" equal, while every store keeps them apart as different bytes.
    public static func == (lhs: RecordID, rhs: RecordID) -> Bool {
        lhs.namespace.utf8.elementsEqual(rhs.namespace.utf8) && lhs.key.utf8.elementsEqual(rhs.key.utf8)
    }

    /// Hashes the UTF-8 bytes, consistently with ``==(_:_:)``.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(namespace.utf8.count)
        for byte in namespace.utf8 { hasher.combine(byte) }
        for byte in key.utf8 { hasher.combine(byte) }
    }

    /// Orders by namespace, then key, comparing UTF-8 bytes (the order stores page in).
    public static func < (lhs: RecordID, rhs: RecordID) -> Bool {
        if lhs.namespace != rhs.namespace {
            return lhs.namespace.utf8.lexicographicallyPrecedes(rhs.namespace.utf8)
        }
        return lhs.key.utf8.lexicographicallyPrecedes(rhs.key.utf8)
    }

    /// The identity as a person reads it, with control characters escaped.
    public var description: String {
        "\(namespace.debugDescription)/\(key.debugDescription)"
    }
}

/// Limits a consumer puts on its keys. They can only be stricter than every store's
/// (``RecordID/maximumKeyBytes``).
public struct IdentityLimits: Hashable, Sendable {
    /// The largest key this consumer accepts, in UTF-8 bytes (at most ``RecordID/maximumKeyBytes``).
    public let maximumKeyBytes: Int

    /// Every store's limits: keys up to 512 bytes.
    public static let `default` = IdentityLimits(uncheckedMaximumKeyBytes: RecordID.maximumKeyBytes)

    /// Lowers the key limit.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` when `maximumKeyBytes` is below 1 or above
    ///   ``RecordID/maximumKeyBytes``.
    public init(maximumKeyBytes: Int) throws(DedupError) {
        guard (1...RecordID.maximumKeyBytes).contains(maximumKeyBytes) else {
            throw DedupError(
                .invalidConfiguration,
                "the key limit must be between 1 and \(RecordID.maximumKeyBytes) bytes, not \(maximumKeyBytes)"
            )
        }
        self.maximumKeyBytes = maximumKeyBytes
    }

    private init(uncheckedMaximumKeyBytes: Int) {
        self.maximumKeyBytes = uncheckedMaximumKeyBytes
    }
}
