import Dedup
import Foundation
import Synchronization

/// Sends a store's commands to the primaries of a Redis Cluster: each command to the primary of
/// its key's hash slot (a keyless one, such as a claim's `TIME`, with the first keyed command of its
/// unit), a unit spanning several primaries as one pipeline per primary, sent concurrently, its
/// replies put back in the unit's order. `MOVED` refreshes the slot map and sends the command
/// where the reply says; `ASK` sends it there once, after `ASKING`; `TRYAGAIN` (a slot's keys
/// part-way through a migration) sends it again shortly. Redirects are bounded
/// (``maximumRedirects``), and so are refreshes: concurrent ones share one `CLUSTER SLOTS`, and a
/// failed node makes the next call refresh at most every ``minimumRefreshInterval``.
final class ClusterRouter: Sendable {
    /// Redirects followed per call before it fails with ``/Dedup/DedupError/Code/storeUnavailable``.
    static let maximumRedirects = 5
    /// How often a map marked stale by a failed node is read again, at most.
    static let minimumRefreshInterval = Duration.milliseconds(100)
    /// The wait before a command refused with `TRYAGAIN` goes again.
    static let tryAgainDelay = Duration.milliseconds(20)

    private struct State {
        var map: SlotMap?
        /// The pools of the map's primaries, in its order: routing reads them by index.
        var primaryPools: [ConnectionPool] = []
        var generation = 0
        var pools: [ClusterNodeAddress: ConnectionPool] = [:]
        var refreshing: Task<DedupError?, Never>?
        var isStale = false
        var lastRefresh: ContinuousClock.Instant?
        var closed = false
    }

    private let settings: ConnectionSettings
    private let poolSize: Int
    /// The connections to the URL's server, the last place to ask for a map.
    private let seed: ConnectionPool
    private let state = Mutex(State())

    init(settings: ConnectionSettings, poolSize: Int, seed: ConnectionPool) {
        self.settings = settings
        self.poolSize = poolSize
        self.seed = seed
    }

    /// The primaries of the current map (empty before the first).
    var primaries: [ClusterNodeAddress] { state.withLock { $0.map?.primaries ?? [] } }

    /// The index of the primary serving each slot in the current map, `nil` for a slot none does
    /// (or before the first map).
    func primaryIndexes(ofSlots slots: [Int]) -> [Int?] {
        state.withLock { state in
            guard let map = state.map else { return slots.map { _ in nil } }
            return slots.map { map.primaryIndex(forSlot: $0) }
        }
    }

    /// Takes a map read elsewhere (the store's first `CLUSTER SLOTS`, on the seed).
    func adopt(_ map: SlotMap) {
        state.withLock { install(map, in: &$0) }
    }

    private func install(_ map: SlotMap, in state: inout State) {
        state.map = map
        state.primaryPools = map.primaries.map { pool(for: $0, in: &state) }
        state.generation += 1
        state.lastRefresh = .now
        state.isStale = false
    }

    // MARK: Executing

    /// Runs `commands` on the primaries their keys belong to and returns the replies in order.
    func execute(_ commands: [RedisCommand], mayRunInline: Bool) async throws(DedupError) -> [RedisReply] {
        let (map, pools, generation) = try await currentMap()
        var placed = [ConnectionPool?](repeating: nil, count: commands.count)
        for index in commands.indices {
            guard let slot = commands[index].clusterSlot else { continue }
            guard let primary = map.primaryIndex(forSlot: slot) else {
                markStale()
                throw DedupError(
                    .storeUnavailable,
                    "Redis Cluster at \(settings.endpoint.redactedDescription): no primary serves hash slot \(slot) (CLUSTERDOWN)"
                )
            }
            placed[index] = pools[primary]
        }
        // A keyless command goes with the next keyed one (a claim's `TIME` with its `SET`), else
        // the last one, else to any primary.
        var next = placed.last(where: { $0 != nil }) ?? pools.first
        guard next != nil else {
            markStale()
            throw DedupError(
                .storeUnavailable,
                "Redis Cluster at \(settings.endpoint.redactedDescription) has no primary serving any slot"
            )
        }
        for index in placed.indices.reversed() {
            if let node = placed[index] { next = node } else { placed[index] = next }
        }
        var targets = placed.map { $0! }
        if let leadingTime = try await leadingTimeOnEveryPrimary(
            commands,
            targets,
            mayRunInline: mayRunInline,
            generation: generation
        ) {
            return leadingTime
        }
        var replies = try await run(commands, on: targets, mayRunInline: mayRunInline)
        try await followRedirects(commands, &replies, &targets, generation: generation)
        return replies
    }

    /// A unit that starts with `TIME` (a batch claim's) and writes on several primaries: the time
    /// must come before every write, so `TIME` heads each primary's pipeline and the earliest answer
    /// stands for all (the primaries share one clock on one host, and nearly one across hosts).
    /// `nil` for any other unit.
    private func leadingTimeOnEveryPrimary(
        _ commands: [RedisCommand],
        _ targets: [ConnectionPool],
        mayRunInline: Bool,
        generation: Int
    ) async throws(DedupError) -> [RedisReply]? {
        guard commands.count > 2, commands[0].clusterSlot == nil, commands[0].name == "TIME" else { return nil }
        var others: [ConnectionPool] = []
        for pool in targets.dropFirst() where pool !== targets[0] && !others.contains(where: { $0 === pool }) {
            others.append(pool)
        }
        if others.isEmpty { return nil }
        let extended = commands + others.map { _ in commands[0] }
        let extendedTargets = targets + others
        // Every `TIME` goes before the writes: the run keeps each primary's commands in the order
        // given, so each `TIME` heads its primary's pipeline.
        let order = [0] + Array(commands.count..<extended.count) + Array(1..<commands.count)
        var replies = try await run(
            order.map { extended[$0] },
            on: order.map { extendedTargets[$0] },
            mayRunInline: mayRunInline
        )
        var unordered = [RedisReply](repeating: .null, count: extended.count)
        for (position, index) in order.enumerated() { unordered[index] = replies[position] }
        replies = Array(unordered[..<commands.count])
        let times = [unordered[0]] + unordered[commands.count...]
        replies[0] = times.min { Self.microseconds($0) < Self.microseconds($1) } ?? replies[0]
        var sentTargets = Array(targets)
        try await followRedirects(commands, &replies, &sentTargets, generation: generation)
        return replies
    }

    /// A `TIME` reply in microseconds; an error or anything else sorts last.
    private static func microseconds(_ reply: RedisReply) -> Int64 {
        guard let parts = reply.arrayValue, parts.count == 2, let seconds = parts[0].integerValue,
            let micros = parts[1].integerValue
        else {
            return .max
        }
        return seconds * 1_000_000 + micros
    }

    /// Runs `commands` on one node (an inspection's `SCAN`, `INFO`).
    func execute(_ commands: [RedisCommand], on node: ClusterNodeAddress) async throws(DedupError) -> [RedisReply] {
        try await run(
            commands,
            on: [ConnectionPool](repeating: try pool(for: node), count: commands.count),
            mayRunInline: false
        )
    }

    /// One pipeline per node, sent concurrently; the replies in the commands' order.
    private func run(
        _ commands: [RedisCommand],
        on targets: [ConnectionPool],
        mayRunInline: Bool
    ) async throws(DedupError) -> [RedisReply] {
        let first = targets[0]
        if !targets.contains(where: { $0 !== first }) {
            do {
                return try await first.pick().execute(commands, mayRunInline: mayRunInline)
            } catch {
                noteFailure(error)
                throw error
            }
        }
        var groups: [(pool: ConnectionPool, indices: [Int])] = []
        for index in targets.indices {
            if let group = groups.firstIndex(where: { $0.pool === targets[index] }) {
                groups[group].indices.append(index)
            } else {
                groups.append((targets[index], [index]))
            }
        }
        let results = await withTaskGroup(of: (Int, Result<[RedisReply], DedupError>).self) { taskGroup in
            // The other primaries' pipelines go to their connections' threads; the first is sent
            // from here meanwhile (inline when the store is otherwise idle), saving one handoff.
            for (number, group) in groups.enumerated().dropFirst() {
                let unit = group.indices.map { commands[$0] }
                let connection = group.pool.pick()
                taskGroup.addTask {
                    (number, await Self.result { () async throws(DedupError) in try await connection.execute(unit) })
                }
            }
            var results = [Result<[RedisReply], DedupError>?](repeating: nil, count: groups.count)
            let unit = groups[0].indices.map { commands[$0] }
            let connection = groups[0].pool.pick()
            results[0] = await Self.result { () async throws(DedupError) in
                try await connection.execute(unit, mayRunInline: mayRunInline)
            }
            for await (number, result) in taskGroup { results[number] = result }
            return results
        }
        var replies = [RedisReply](repeating: .null, count: commands.count)
        for (number, group) in groups.enumerated() {
            switch results[number]! {
            case .success(let unitReplies):
                for (index, reply) in zip(group.indices, unitReplies) { replies[index] = reply }
            case .failure(let error):
                noteFailure(error)
                throw error
            }
        }
        return replies
    }

    private static func result(
        _ body: () async throws(DedupError) -> [RedisReply]
    ) async -> Result<[RedisReply], DedupError> {
        do throws(DedupError) {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }

    /// Sends the commands answered with `MOVED`, `ASK` or `TRYAGAIN` again, where they now belong.
    private func followRedirects(
        _ commands: [RedisCommand],
        _ replies: inout [RedisReply],
        _ targets: inout [ConnectionPool],
        generation: Int
    ) async throws(DedupError) {
        for _ in 0..<Self.maximumRedirects {
            var again: [(index: Int, pool: ConnectionPool, asking: Bool)] = []
            var moved = false
            var tryAgain = false
            for index in replies.indices {
                guard case .error(let text) = replies[index] else { continue }
                if let redirect = ClusterRedirect(replies[index]) {
                    again.append((index, try pool(for: redirect.target), redirect.isAsk))
                    moved = moved || !redirect.isAsk
                } else if text.hasPrefix("TRYAGAIN") {
                    again.append((index, targets[index], false))
                    tryAgain = true
                }
            }
            if again.isEmpty { return }
            if moved { try? await refresh(after: generation) }
            if tryAgain { try? await Task.sleep(for: Self.tryAgainDelay) }
            var unit: [RedisCommand] = []
            var unitTargets: [ConnectionPool] = []
            for entry in again {
                if entry.asking {
                    unit.append(Self.askingCommand)
                    unitTargets.append(entry.pool)
                }
                unit.append(commands[entry.index])
                unitTargets.append(entry.pool)
                targets[entry.index] = entry.pool
            }
            let answers = try await run(unit, on: unitTargets, mayRunInline: false)
            var position = 0
            for entry in again {
                if entry.asking { position += 1 }
                replies[entry.index] = answers[position]
                position += 1
            }
        }
        if let text = replies.lazy.compactMap(\.errorText).first(where: {
            ClusterRedirect(.error($0)) != nil || $0.hasPrefix("TRYAGAIN")
        }) {
            throw DedupError(
                .storeUnavailable,
                "Redis Cluster at \(settings.endpoint.redactedDescription) still redirects after \(Self.maximumRedirects) redirects: \(text)",
                redisErrorText: text
            )
        }
    }

    private static let askingCommand = RedisCommand("ASKING")

    // MARK: The slot map and the pools

    private func pool(for node: ClusterNodeAddress) throws(DedupError) -> ConnectionPool {
        let found: ConnectionPool? = state.withLock { state in state.closed ? nil : pool(for: node, in: &state) }
        guard let found else { throw DedupError(.storeUnavailable, "the Redis store was closed") }
        return found
    }

    /// The node's pool, made on first use: logging in as the URL says, database 0.
    private func pool(for node: ClusterNodeAddress, in state: inout State) -> ConnectionPool {
        if let pool = state.pools[node] { return pool }
        var nodeSettings = settings
        nodeSettings.endpoint = RedisEndpoint(
            transport: .tcp(host: node.host, port: node.port),
            username: settings.endpoint.username,
            password: settings.endpoint.password,
            database: 0
        )
        let pool = ConnectionPool(settings: nodeSettings, size: poolSize)
        state.pools[node] = pool
        return pool
    }

    /// A node that cannot be reached, or does not answer, may have lost its slots (a failover):
    /// the next call reads the map again.
    private func noteFailure(_ error: DedupError) {
        if error.code == .storeUnavailable || error.code == .timeout { markStale() }
    }

    private func markStale() {
        state.withLock { $0.isStale = true }
    }

    /// The map to route by, read again first when a failed node made it stale (at most every
    /// ``minimumRefreshInterval``).
    private func currentMap() async throws(DedupError) -> (SlotMap, [ConnectionPool], Int) {
        let (map, pools, generation, refreshDue) = state.withLock { state in
            let due =
                state.map == nil
                || (state.isStale
                    && state.lastRefresh.map { ContinuousClock.now - $0 >= Self.minimumRefreshInterval } ?? true)
            return (state.map, state.primaryPools, state.generation, due)
        }
        if refreshDue {
            do {
                try await refresh(after: generation)
            } catch {
                if map == nil { throw error }
            }
            if let current = state.withLock({ state in state.map.map { ($0, state.primaryPools, state.generation) } }) {
                return current
            }
        }
        guard let map else {
            throw DedupError(
                .storeUnavailable,
                "no slot map for the Redis Cluster at \(settings.endpoint.redactedDescription)"
            )
        }
        return (map, pools, generation)
    }

    /// Reads the slot map again, unless it has been since `generation`; concurrent callers share
    /// one reading.
    func refresh(after generation: Int) async throws(DedupError) {
        let task: Task<DedupError?, Never>? = state.withLock { state in
            if state.generation != generation { return nil }
            if let running = state.refreshing { return running }
            let task = Task { await self.readMap() }
            state.refreshing = task
            return task
        }
        if let error = await task?.value { throw error }
    }

    /// Asks the known nodes in turn, then the URL's seed nodes, for `CLUSTER SLOTS`; adopts the
    /// first map.
    private func readMap() async -> DedupError? {
        let known = state.withLock { $0.map?.nodes ?? [] }
        var lastError = DedupError(
            .storeUnavailable,
            "no node of the Redis Cluster at \(settings.endpoint.redactedDescription) answered CLUSTER SLOTS"
        )
        var sources: [(ClusterNodeAddress?, ConnectionPool)] = []
        for node in known {
            if let pool = try? pool(for: node) { sources.append((node, pool)) }
        }
        sources.append((nil, seed))
        for (node, pool) in additionalSeedPools() where !known.contains(node) {
            sources.append((node, pool))
        }
        for (node, pool) in sources {
            do throws(DedupError) {
                let reply = try await pool.pick().execute([Self.clusterSlotsCommand])[0]
                let asked = node ?? seedAddress
                if let text = reply.errorText {
                    throw DedupError.fromServer(text, endpoint: pool.connections[0].settings.endpoint)
                }
                let map = try SlotMap(clusterSlots: reply, askedNode: asked)
                if map.primaries.isEmpty { continue }
                state.withLock { state in
                    install(map, in: &state)
                    state.refreshing = nil
                }
                return nil
            } catch {
                lastError = error
            }
        }
        state.withLock { state in
            state.refreshing = nil
            state.lastRefresh = .now
        }
        return lastError
    }

    static let clusterSlotsCommand = RedisCommand("CLUSTER", "SLOTS")

    /// The pools of the URL's other seed nodes (`redis://host1:port1,host2:port2`), in its order.
    func additionalSeedPools() -> [(ClusterNodeAddress, ConnectionPool)] {
        settings.endpoint.additionalSeeds.compactMap { seed in
            guard case .tcp(let host, let port) = seed else { return nil }
            let node = ClusterNodeAddress(host: host, port: port)
            return (try? pool(for: node)).map { (node, $0) }
        }
    }

    /// The seed's address for a map that names it by an empty host (a TCP seed only).
    var seedAddress: ClusterNodeAddress {
        if case .tcp(let host, let port) = settings.endpoint.transport {
            return ClusterNodeAddress(host: host, port: port)
        }
        return ClusterNodeAddress(host: "127.0.0.1", port: 6379)
    }

    func close() async {
        let pools = state.withLock { state in
            state.closed = true
            return Array(state.pools.values)
        }
        for pool in pools { await pool.close() }
    }

    func closeSoon() {
        let pools = state.withLock { state in
            state.closed = true
            return Array(state.pools.values)
        }
        for pool in pools { pool.closeSoon() }
    }
}
