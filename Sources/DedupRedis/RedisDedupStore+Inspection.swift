import Dedup
import Foundation

// Inspection, for operators and `dedup-inspect`: reading, listing, deleting and counting records.
extension RedisDedupStore {
    /// The record of one identity (`TIME` and the read script in one round trip).
    public func record(for id: RecordID) async throws -> DedupRecord? {
        let replies = try await execute([RedisCommand("TIME"), readCommand(key(for: id))])
        let now = try serverTime(replies[0])
        guard let record = try decodeRead(replies[1], id: id, strict: true),
            now < record.expiresAt.millisecondsSince1970
        else {
            return nil
        }
        return record
    }

    /// A page of records in `SCAN` order.
    ///
    /// Keys are found with `SCAN … MATCH <prefix>:*` (`<prefix>:<n>:<namespace>:<keyPrefix>*` when
    /// the filter names a namespace) `TYPE string`, read with the pipelined read script, and
    /// filtered here.
    /// The cursor is the `SCAN` cursor, plus the last key returned when a page ends inside one
    /// `SCAN` batch (the batch's keys are taken in byte order so the rest can be found again). As
    /// with `SCAN` itself, a record present for the whole listing is returned at least once; one
    /// written during it may or may not be. A page may hold fewer records than `limit` while more
    /// follow: keep reading while ``/Dedup/RecordPage/next`` is not `nil`.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage
    {
        guard limit > 0 else {
            throw DedupError(.invalidConfiguration, "the page limit must be positive, not \(limit)")
        }
        let nodes = try await scannedNodes()
        var node = 0
        var scanCursor = "0"
        var skipThrough: [UInt8]?
        if let cursor {
            // `[<node>/]<SCAN cursor>[:<last key, hex>]`; the node, on a cluster, indexes its primaries.
            var token = Substring(cursor.token)
            if nodes.count > 1, let slash = token.firstIndex(of: "/") {
                node = Int(token[..<slash]) ?? -1
                token = token[token.index(after: slash)...]
            }
            let parts = token.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard nodes.indices.contains(node), let first = parts.first, UInt64(first) != nil,
                parts.count == 1 || Self.unhex(parts[1]) != nil
            else {
                throw DedupError(.invalidConfiguration, "not a Redis page cursor: \(cursor.token.debugDescription)")
            }
            scanCursor = String(first)
            if parts.count == 2 { skipThrough = Self.unhex(parts[1]) }
        }
        func token(_ node: Int, _ scanCursor: String) -> PageCursor {
            PageCursor(token: nodes.count > 1 ? "\(node)/\(scanCursor)" : scanCursor)
        }
        /// Where the listing goes on after a `SCAN` batch: the node's next cursor, else the next node.
        func following(_ nextCursor: String) -> (node: Int, cursor: String)? {
            if nextCursor != "0" { return (node, nextCursor) }
            return node + 1 < nodes.count ? (node + 1, "0") : nil
        }
        let pattern = matchPattern(for: filter)
        var page: [DedupRecord] = []
        var batches = 0
        while true {
            let (nextCursor, scanned) = try await scan(
                nodes[node],
                cursor: scanCursor,
                pattern: pattern,
                count: max(limit, 10)
            )
            var keys = scanned.sorted { $0.lexicographicallyPrecedes($1) }
            if let skipThrough { keys.removeAll { !skipThrough.lexicographicallyPrecedes($0) } }
            skipThrough = nil
            let next = following(nextCursor)
            if !keys.isEmpty {
                let replies = try await execute([RedisCommand("TIME")] + keys.map(readCommand))
                let now = try serverTime(replies[0])
                for (position, key) in keys.enumerated() {
                    let reply = replies[position + 1]
                    guard let id = recordID(fromKey: key), let record = try decodeRead(reply, id: id, strict: false),
                        now < record.expiresAt.millisecondsSince1970, filter.matches(record)
                    else { continue }
                    page.append(record)
                    if page.count == limit {
                        let isLastOfBatch = position == keys.count - 1
                        if !isLastOfBatch {
                            let resume = token(node, scanCursor)
                            return RecordPage(
                                records: page,
                                next: PageCursor(token: resume.token + ":" + Self.hex(key))
                            )
                        }
                        return RecordPage(records: page, next: next.map { token($0.node, $0.cursor) })
                    }
                }
            }
            guard let next else { return RecordPage(records: page, next: nil) }
            (node, scanCursor) = next
            batches += 1
            if batches >= 64 { return RecordPage(records: page, next: token(node, scanCursor)) }
        }
    }

    /// The servers a listing scans: the URL's, or every primary of a cluster (in address order, so
    /// a page cursor names the same node on the next call while the cluster keeps its primaries).
    private func scannedNodes() async throws(DedupError) -> [ClusterNodeAddress?] {
        try await resolveTopology()
        guard isCluster else { return [nil] }
        let primaries = cluster.primaries.sorted { ($0.host, $0.port) < ($1.host, $1.port) }
        return primaries.isEmpty ? [nil] : primaries
    }

    /// Deletes those of `ids` whose live records still match `filter`, each by the conditional
    /// delete script (checked and deleted atomically), all pipelined in one round trip.
    public func delete(_ ids: [RecordID], matching filter: RecordFilter) async throws -> Int {
        let candidates = ids.filter { id in
            if let namespace = filter.namespace, id.namespace != namespace { return false }
            if let keyPrefix = filter.keyPrefix, !id.key.utf8.starts(with: keyPrefix.utf8) { return false }
            return true
        }
        if candidates.isEmpty { return 0 }
        let state = filter.state?.rawValue ?? ""
        let from = filter.from.map { String(Self.ceilingMilliseconds($0)) } ?? ""
        let until = filter.until.map { String(Self.ceilingMilliseconds($0)) } ?? ""
        let commands = candidates.map { id in
            var command = RedisCommand("EVALSHA", RedisScript.conditionalDelete.sha, "1")
            command.append(key(for: id))
            command.append(state)
            command.append(from)
            command.append(until)
            return command
        }
        var deleted = 0
        for chunkStart in stride(from: 0, to: commands.count, by: 1000) {
            let chunk = Array(commands[chunkStart..<min(chunkStart + 1000, commands.count)])
            for reply in try await execute(chunk) where try decodeFlag(reply) {
                deleted += 1
            }
        }
        return deleted
    }

    /// Returns 0: Redis removes each record itself when its key expires, and every read here
    /// already treats a record at its expiry as absent.
    public func purgeExpired(limit: Int) async throws -> Int {
        0
    }

    /// Counts live records by namespace and state with a `SCAN` over `<prefix>:*` and the pipelined
    /// read script, one batch at a time (memory stays bounded by the number of namespaces).
    public func stats() async throws -> DedupStats {
        struct Counts {
            var inFlight = 0, expiredLeases = 0, completed = 0
            var oldest: Int64?, newest: Int64?
            var oldestBroker: Date?, newestBroker: Date?
        }
        var counts: [String: Counts] = [:]
        let pattern = Self.globEscape(keyPrefixBytes) + [UInt8(ascii: "*")]
        for node in try await scannedNodes() {
            var cursor = "0"
            repeat {
                let (next, keys) = try await scan(node, cursor: cursor, pattern: pattern, count: 1000)
                cursor = next
                if keys.isEmpty { continue }
                let replies = try await execute([RedisCommand("TIME")] + keys.map(readCommand))
                let now = try serverTime(replies[0])
                for (position, key) in keys.enumerated() {
                    guard let id = recordID(fromKey: key),
                        let record = try decodeRead(replies[position + 1], id: id, strict: false),
                        now < record.expiresAt.millisecondsSince1970
                    else { continue }
                    var entry = counts[id.namespace] ?? Counts()
                    switch record.state {
                    case .inFlight:
                        entry.inFlight += 1
                        if let leaseUntil = record.leaseUntil, leaseUntil.millisecondsSince1970 <= now {
                            entry.expiredLeases += 1
                        }
                    case .completed:
                        entry.completed += 1
                    }
                    let time = record.recordTime.millisecondsSince1970
                    entry.oldest = min(entry.oldest ?? time, time)
                    entry.newest = max(entry.newest ?? time, time)
                    if let broker = record.brokerTime {
                        entry.oldestBroker = min(entry.oldestBroker ?? broker, broker)
                        entry.newestBroker = max(entry.newestBroker ?? broker, broker)
                    }
                    counts[id.namespace] = entry
                }
            } while cursor != "0"
        }
        let namespaces = counts.map { namespace, entry in
            DedupStats.NamespaceStats(
                namespace: namespace,
                inFlight: entry.inFlight,
                expiredLeases: entry.expiredLeases,
                completed: entry.completed,
                oldest: entry.oldest.map { Date(millisecondsSince1970: $0) },
                newest: entry.newest.map { Date(millisecondsSince1970: $0) },
                oldestBrokerTime: entry.oldestBroker,
                newestBrokerTime: entry.newestBroker
            )
        }.sorted { $0.namespace.utf8.lexicographicallyPrecedes($1.namespace.utf8) }
        return DedupStats(namespaces: namespaces)
    }

    /// One `SCAN` on the URL's server, or on a cluster's primary `node`.
    private func scan(
        _ node: ClusterNodeAddress?,
        cursor: String,
        pattern: [UInt8],
        count: Int
    ) async throws -> (String, [[UInt8]]) {
        var command = RedisCommand("SCAN", cursor, "MATCH")
        command.append(pattern)
        command.append("COUNT")
        command.append(String(count))
        command.append("TYPE")
        command.append("string")
        let replies: [RedisReply]
        if let node {
            replies = try await cluster.execute([command], on: node)
        } else {
            replies = try await execute([command])
        }
        let reply = replies[0]
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let parts = reply.arrayValue, parts.count == 2, let next = parts[0].stringValue,
            let keys = parts[1].arrayValue
        else {
            throw unexpected(reply, doing: "SCAN")
        }
        return (next, keys.compactMap(\.bytesValue))
    }

    private func recordID(fromKey key: [UInt8]) -> RecordID? {
        guard key.starts(with: keyPrefixBytes) else { return nil }
        let text = String(decoding: key[keyPrefixBytes.count...], as: UTF8.self)
        return RecordID(encoded: Substring(text))
    }

    /// `<prefix>:*`, or `<prefix>:<n>:<namespace>:<keyPrefix>*` when the filter names a namespace,
    /// with glob characters escaped.
    private func matchPattern(for filter: RecordFilter) -> [UInt8] {
        guard let namespace = filter.namespace else {
            return Self.globEscape(keyPrefixBytes) + [UInt8(ascii: "*")]
        }
        let literal = keyPrefixBytes + Array("\(namespace.utf8.count):\(namespace):\(filter.keyPrefix ?? "")".utf8)
        return Self.globEscape(literal) + [UInt8(ascii: "*")]
    }

    static func globEscape(_ bytes: [UInt8]) -> [UInt8] {
        var escaped: [UInt8] = []
        escaped.reserveCapacity(bytes.count + 4)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "\\"),
                UInt8(ascii: "^"), UInt8(ascii: "-"):
                escaped.append(UInt8(ascii: "\\"))
            default:
                break
            }
            escaped.append(byte)
        }
        return escaped
    }

    private static func ceilingMilliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded(.up))
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func unhex(_ text: Substring) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = hexValue(utf8[index]), let low = hexValue(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}
