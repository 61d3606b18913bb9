import Dedup

extension DedupError {
    /// Maps a Redis error reply to the most specific code, keeping the server's text in the message
    /// and as ``/Dedup/DedupError/redisErrorText``.
    package static func fromServer(_ text: String, endpoint: RedisEndpoint) -> DedupError {
        let word = text.prefix(while: { $0 != " " })
        let where_ = endpoint.redactedDescription
        func error(_ code: DedupError.Code, _ message: String) -> DedupError {
            DedupError(code, message, redisErrorText: text)
        }
        switch word {
        case "WRONGPASS", "NOAUTH", "NOPERM":
            return error(.authenticationFailed, "Redis at \(where_) refused access: \(text)")
        case "WRONGTYPE":
            return error(
                .wrongType,
                "Redis at \(where_) holds another kind of value at a dedup record's key (someone else's data?): \(text)"
            )
        case "READONLY":
            return error(.readOnly, "Redis at \(where_) accepts no writes (a read-only replica?): \(text)")
        case "OOM":
            return error(.outOfMemory, "Redis at \(where_) is out of memory (maxmemory reached): \(text)")
        case "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN":
            return error(.storeUnavailable, "Redis at \(where_) cannot serve now: \(text)")
        case "DEDUPCORRUPT":
            return error(.corruptStore, "Redis at \(where_): \(text.dropFirst(word.count + 1))")
        default:
            if text.contains("AUTH") && text.contains("without any password configured") {
                return error(.authenticationFailed, "Redis at \(where_) has no password but the URL gives one: \(text)")
            }
            return error(.storeError, "Redis at \(where_): \(text)")
        }
    }
}
