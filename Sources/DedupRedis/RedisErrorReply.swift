import Dedup

extension DedupError {
    /// Maps a Redis error reply to the most specific code, keeping the server's text.
    package static func fromServer(_ text: String, endpoint: RedisEndpoint) -> DedupError {
        let word = text.prefix(while: { $0 != " " })
        let where_ = endpoint.redactedDescription
        switch word {
        case "WRONGPASS", "NOAUTH", "NOPERM":
            return DedupError(.authenticationFailed, "Redis at \(where_) refused access: \(text)")
        case "WRONGTYPE":
            return DedupError(.wrongType, "Redis at \(where_) holds another kind of value at a dedup record's key (someone else's data?): \(text)")
        case "READONLY":
            return DedupError(.readOnly, "Redis at \(where_) accepts no writes (a read-only replica?): \(text)")
        case "OOM":
            return DedupError(.outOfMemory, "Redis at \(where_) is out of memory (maxmemory reached): \(text)")
        case "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN":
            return DedupError(.storeUnavailable, "Redis at \(where_) cannot serve now: \(text)")
        case "DEDUPCORRUPT":
            return DedupError(.corruptStore, "Redis at \(where_): \(text.dropFirst(word.count + 1))")
        default:
            if text.contains("AUTH") && text.contains("without any password configured") {
                return DedupError(.authenticationFailed, "Redis at \(where_) has no password but the URL gives one: \(text)")
            }
            return DedupError(.storeError, "Redis at \(where_): \(text)")
        }
    }
}
