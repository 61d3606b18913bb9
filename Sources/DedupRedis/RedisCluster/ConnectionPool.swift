import Synchronization

/// A few connections to one server. Calls fill the first connection up to ``sharedLoad`` jobs
/// before another is used: concurrent callers on one connection share its round trips (one write
/// and one read of the server's for all of them), where spread over several they would each make
/// their own. Past that, each call goes to the least loaded connection.
final class ConnectionPool: Sendable {
    let connections: [RedisConnection]
    private let nextConnection = Atomic<Int>(0)

    init(settings: ConnectionSettings, size: Int) {
        connections = (0..<size).map { RedisConnection(settings: settings, index: $0) }
    }

    /// Jobs (queued or in progress) a connection takes before calls go to another.
    static let sharedLoad = 16

    /// The first connection below ``sharedLoad``; when all are at it, the least loaded one,
    /// starting the search at a rotating position so ties spread.
    func pick() -> RedisConnection {
        let count = connections.count
        if count == 1 { return connections[0] }
        for connection in connections where connection.load.load(ordering: .relaxed) < Self.sharedLoad {
            return connection
        }
        let start = nextConnection.add(1, ordering: .relaxed).oldValue & Int.max
        var best = connections[start % count]
        var bestLoad = best.load.load(ordering: .relaxed)
        if bestLoad == 0 { return best }
        for offset in 1..<count {
            let candidate = connections[(start + offset) % count]
            let load = candidate.load.load(ordering: .relaxed)
            if load < bestLoad {
                best = candidate
                bestLoad = load
                if load == 0 { break }
            }
        }
        return best
    }

    func close() async {
        for connection in connections { await connection.close() }
    }

    func closeSoon() {
        for connection in connections { connection.closeSoon() }
    }
}
