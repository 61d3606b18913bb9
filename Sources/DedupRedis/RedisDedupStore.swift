import CHiredis
import Dedup
import Foundation
import Logging
import Synchronization

/// A ``/Dedup/DedupStore`` on a Redis server (7.0 or later), through the system hiredis.
///
/// ## Key layout
///
/// One Redis string per record, at `<keyPrefix>:<RecordID.encoded>`, i.e.
/// `dedup:<namespace byte count>:<namespace>:<key>` (the byte count makes the key injective
/// whatever the namespace contains), expiring when the record's retention ends. `redis-cli GET`
/// shows the state first:
///
/// ```
/// in_flight 15:web-7.prod:4711 32:<token> 30s 1d bmwtesoa0 p5:fp-42
/// done mwtesoc2 41 1d b12 p5:fp-42
/// ```
///
/// An in-flight value holds the holder's label and token, the lease span and retention, whose
/// times hang off the key's expiry (`PEXPIRETIME` + 1, server clock) so a claim can create the
/// record with a plain `SET`, which knows no server time. A completed value holds the first claim
/// (Unix ms in base 36, as the completing lease carries it), how long after it the record
/// completed, and the retention; it expires at their sum. Both carry the broker time, the fencing
/// token and attempt, the fingerprint (and a completed one the result) only when they say
/// something; see `RecordValue` for every field. The owner-checked scripts compare the holder's
/// fields, label and token, with the lease's (``/Dedup/Lease/ownerLabel``). Values written by
/// earlier releases (`in_flight label=… owner=…`, `completed …`) are read, completed, renewed,
/// released and taken over as well.
///
/// ## Behaviour
///
/// A claim is `SET <key> <new in-flight record> NX PX <lease + retention − 1> GET`, with one
/// `TIME` ahead of it (or of a whole batch) in the same round trip: no value means the record was
/// created, a completed value is a duplicate and carries its record. Only when the key is in
/// flight (or holds a completed value past its expiry) does a second step run, the claim script,
/// which decides between a live lease, a payload mismatch, a takeover and a fresh claim
/// atomically. Complete, release, renew and conditional delete are owner-checked Lua scripts,
/// loaded once per connection and called by `EVALSHA` (reloaded after `NOSCRIPT`, once), using the
/// server's clock; each works on one key, and a batch's completions share calls of the completion
/// script (see ``Configuration/completesBatchesInOneScript``). A duplicate costs one round trip, a
/// processed message two (claim, complete); batches are pipelined, one round trip each (plus one
/// for the keys of a batch found in flight).
///
/// Connections are made on first use. Each pooled connection is owned by a thread of its own, so a
/// network wait never holds one of Swift's cooperative threads, and concurrent calls on one
/// connection share round trips. A connection the server has closed, or that failed, is replaced on
/// the next call (bounded attempts with backoff), so a restarted server is used again by the same
/// store object.
///
/// Durability is Redis's: with the default snapshotting, a crash of the server loses recent
/// records; run it with `appendonly yes` (and `appendfsync everysec` or `always`) to keep completed
/// records through a restart.
public final class RedisDedupStore: DedupStore {
    /// Where the server is; print ``RedisEndpoint/redactedDescription``, never the URL.
    public let endpoint: RedisEndpoint
    /// How the store connects and names its keys.
    public let configuration: Configuration

    let logger: Logger
    /// The connections to the URL's server (in a cluster, used only to discover it).
    let seedPool: ConnectionPool
    /// Whether the server is a cluster node, once known (``Topology``).
    let topology = Atomic<UInt8>(Topology.unknown.rawValue)
    /// Routes the calls when the server is a cluster node.
    let cluster: ClusterRouter
    /// Calls in progress, to allow the inline path only to a call that is alone.
    private let activeCalls = Atomic<Int>(0)
    let keyPrefixBytes: [UInt8]

    private static let ignoreSIGPIPE: Void = {
        // A write to a socket the server has reset must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
    }()

    /// Creates a store for a Redis URL; connects on first use.
    ///
    /// - Parameters:
    ///   - url: `redis://[user:password@]host[:port][/db]` or
    ///     `unix://[user:password@]/path/to/redis.sock[?db=N]` (see ``RedisEndpoint``).
    ///   - configuration: Timeouts, pool size, key prefix, reconnect policy.
    ///   - logger: Where to log reconnects; the password never appears in it. The task's
    ///     `Logger.current` when `nil`, as for `IdempotentConsumer`. Errors are thrown, not logged.
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for a malformed URL, `rediss://`, or
    ///   out-of-range configuration.
    public convenience init(url: String, configuration: Configuration = .init(), logger: Logger? = nil) throws {
        try self.init(endpoint: RedisEndpoint(url: url), configuration: configuration, logger: logger)
    }

    /// Creates a store for an endpoint; connects on first use.
    ///
    /// - Throws: ``/Dedup/DedupError/Code/invalidConfiguration`` for out-of-range configuration.
    public init(endpoint: RedisEndpoint, configuration: Configuration = .init(), logger: Logger? = nil) throws {
        let logger = logger ?? Logger.current
        func invalid(_ why: String) -> DedupError {
            DedupError(.invalidConfiguration, "Redis store configuration: \(why)")
        }
        guard configuration.connectTimeout > .zero else { throw invalid("connectTimeout must be positive") }
        guard configuration.commandTimeout > .zero else { throw invalid("commandTimeout must be positive") }
        guard (1...64).contains(configuration.poolSize) else {
            throw invalid("poolSize must be between 1 and 64, not \(configuration.poolSize)")
        }
        guard !configuration.keyPrefix.isEmpty else { throw invalid("keyPrefix must not be empty") }
        guard configuration.reconnect.maximumAttempts >= 1 else {
            throw invalid("reconnect.maximumAttempts must be at least 1")
        }
        guard configuration.reconnect.initialBackoff >= .zero, configuration.reconnect.maximumBackoff >= .zero else {
            throw invalid("reconnect backoffs must not be negative")
        }
        guard endpoint.database >= 0 else { throw invalid("the database number must not be negative") }
        _ = Self.ignoreSIGPIPE
        self.endpoint = endpoint
        self.configuration = configuration
        self.logger = logger
        self.keyPrefixBytes = Array(configuration.keyPrefix.utf8) + [UInt8(ascii: ":")]
        let settings = ConnectionSettings(
            endpoint: endpoint,
            connectTimeout: configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout,
            reconnect: configuration.reconnect,
            logger: logger
        )
        self.seedPool = ConnectionPool(settings: settings, size: configuration.poolSize)
        self.cluster = ClusterRouter(settings: settings, poolSize: configuration.poolSize, seed: seedPool)
    }

    deinit {
        seedPool.closeSoon()
        cluster.closeSoon()
    }

    /// Closes every connection and stops their threads; later calls throw
    /// ``/Dedup/DedupError/Code/storeUnavailable``.
    public func close() async {
        await seedPool.close()
        await cluster.close()
    }

    /// Sends `PING` and returns the round-trip time (the connection is made first if needed, and
    /// not counted).
    ///
    /// - Throws: ``/Dedup/DedupError`` when the server cannot be reached or refuses the login.
    public func ping() async throws -> Duration {
        _ = try await execute([RedisCommand("PING")])
        let clock = ContinuousClock()
        let start = clock.now
        let replies = try await execute([RedisCommand("PING")])
        let elapsed = clock.now - start
        if let text = replies.first?.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        return elapsed
    }

    // MARK: Transitions

    /// Claims a key: `TIME` and `SET … NX PX … GET` in one round trip; a second one (the claim
    /// script) only when the key is in flight, or holds a completed value past its expiry.
    ///
    /// The lease's ``/Dedup/Lease/leaseUntil`` is the server's time just before the `SET` plus the lease:
    /// never later than the record's, and equal to it up to the milliseconds between the two.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        var pieces = sharedPieces
        let headerStart = try pieces.ownerHeaderStart(claimingAs: request.ownerLabel)
        let command = fastClaimCommand(
            request.id,
            request.ownerToken,
            headerStart,
            request.fingerprint,
            brokerMilliseconds: request.brokerMilliseconds,
            lease: request.lease,
            retention: request.retention,
            &pieces
        )
        keep(pieces)
        let replies = try await execute([Self.timeCommand, command])
        let now: Int64
        do {
            now = try serverTime(replies[0])
        } catch {
            await releaseCreated(by: replies[1...], of: [request])
            throw error
        }
        if let answer = try decodeFastClaim(
            replies[1],
            request.id,
            request.ownerToken,
            request.ownerLabel,
            request.fingerprint,
            lease: request.lease,
            now: now,
            pieces: &pieces
        ) {
            return answer
        }
        return try decodeScriptClaim(try await single(scriptClaimCommand(request, headerStart)), request: request)
    }

    /// Claims many keys in one pipelined round trip (`TIME`, then a `SET … NX GET` each), plus one
    /// for those found in flight, whose claim scripts run in the batch's order.
    ///
    /// When one key fails (someone else's value at its key, say), the call throws that error and
    /// first releases the keys this batch acquired, so none is left in flight until its lease
    /// passes.
    public func claim(batch requests: [ClaimRequest]) async throws -> [ClaimAnswer] {
        if requests.isEmpty { return [] }
        var pieces = sharedPieces
        let commands = try fastClaimCommands(requests, &pieces)
        keep(pieces)
        let replies = try await execute(commands)
        let now: Int64
        do {
            now = try serverTime(replies[0])
        } catch {
            await releaseCreated(by: replies[1...], of: requests)
            throw error
        }
        var answers: [ClaimAnswer] = []
        answers.reserveCapacity(requests.count)
        var unsettled: [Int] = []
        var settled = [Bool](repeating: false, count: requests.count)
        var failure: (any Error)?
        requests.withUnsafeBufferPointer { requests in
            replies.withUnsafeBufferPointer { replies in
                for index in requests.indices {
                    do {
                        // The fields, not the request: passing the whole request copies it.
                        if let answer = try decodeFastClaim(
                            replies[index + 1],
                            requests[index].id,
                            requests[index].ownerToken,
                            requests[index].ownerLabel,
                            requests[index].fingerprint,
                            lease: requests[index].lease,
                            now: now,
                            pieces: &pieces
                        ) {
                            answers.append(answer)
                            settled[index] = true
                            continue
                        }
                        unsettled.append(index)
                    } catch {
                        failure = failure ?? error
                    }
                    answers.append(.acquired(Self.placeholderLease))
                }
            }
        }
        if !unsettled.isEmpty && failure == nil {
            do {
                let scripted = try await execute(
                    unsettled.map { scriptClaimCommand(requests[$0], pieces.ownerHeaderStart(requests[$0].ownerLabel)) }
                )
                for (index, reply) in zip(unsettled, scripted) {
                    do {
                        answers[index] = try decodeScriptClaim(reply, request: requests[index])
                        settled[index] = true
                    } catch {
                        failure = failure ?? error
                    }
                }
            } catch {
                failure = error
            }
        }
        if let failure {
            await releaseAfterFailedClaim(
                requests.indices.compactMap { index in
                    guard settled[index], case .acquired(let lease) = answers[index] else { return nil }
                    return lease
                }
            )
            throw failure
        }
        return answers
    }

    /// After the claim's `TIME` failed (an ACL without `TIME`, say): releases the keys the claim's
    /// `SET`s created, so none is left in flight when the error is thrown.
    private func releaseCreated(by setReplies: ArraySlice<RedisReply>, of requests: [ClaimRequest]) async {
        let created = zip(setReplies, requests).compactMap { setReply, request -> Lease? in
            guard case .null = setReply else { return nil }
            return Lease(
                id: request.id,
                ownerToken: request.ownerToken,
                fencingToken: 1,
                attempt: 1,
                leaseUntil: Date(timeIntervalSince1970: 0),
                isTakeover: false,
                ownerLabel: request.ownerLabel
            )
        }
        await releaseAfterFailedClaim(created)
    }

    /// Best effort after a failed claim: releases what it acquired (their owner checks keep
    /// anyone else's record safe); a failure here leaves those keys to their leases, as before.
    private func releaseAfterFailedClaim(_ leases: [Lease]) async {
        if leases.isEmpty { return }
        do {
            _ = try await execute(
                leases.map { ownerCommand(RedisScript.release, $0, extraBytes: 0, extraArguments: 0) }
            )
        } catch {
            logger.warning(
                "could not release the keys of a failed batch claim; they stay in flight until their leases pass",
                metadata: ["keys": "\(leases.count)", "error": "\(error)"]
            )
        }
    }

    static let timeCommand = RedisCommand("TIME")

    /// Stands in the answers of a batch for those the claim script is still to decide.
    private static let placeholderLease = Lease(
        id: RecordID(uncheckedNamespace: "-", key: "-"),
        ownerToken: "",
        fencingToken: 0,
        attempt: 0,
        leaseUntil: Date(timeIntervalSince1970: 0),
        isTakeover: false
    )

    /// Completes with one `EVALSHA` of the complete script.
    public func complete(_ completion: Completion) async throws {
        var pieces = sharedPieces
        let command = withUnsafePointer(to: completion) {
            completeCommand(UnsafeBufferPointer(start: $0, count: 1), &pieces)
        }
        keep(pieces)
        let reply = try await single(command)
        var answers: [CompletionAnswer] = []
        try decodeCompletions(reply, count: 1, into: &answers)
        if answers[0] == .leaseLost {
            throw leaseLost(completion.lease, doing: "complete")
        }
    }

    /// Most keys one call of the completion script takes: a longer batch is split (the calls
    /// pipelined), so no call holds the server for long (about 3 µs of script time per key).
    public static let maximumKeysPerCompletion = 256

    /// Completes many leases in one round trip: one call of the completion script for a run of up
    /// to ``maximumKeysPerCompletion`` completions with the same retention (a consumer's all
    /// share it), or one per completion when
    /// ``Configuration/completesBatchesInOneScript`` is off.
    ///
    /// When one record cannot be read (someone else's value at its key), the call throws that
    /// error; the other completions of the batch are written all the same.
    public func complete(batch completions: [Completion]) async throws -> [CompletionAnswer] {
        if completions.isEmpty { return [] }
        let oneScript = configuration.completesBatchesInOneScript && !refusesKeysAcrossSlots.load(ordering: .relaxed)
        if oneScript { try await resolveTopology() }
        if oneScript, isCluster, !refusesScriptFlags.load(ordering: .relaxed),
            let keyReplies = try await completeAcrossSlots(completions)
        {
            return try decodeCompletionAnswers(keyReplies)
        }
        let calls = completionCalls(completions, keysPerCall: oneScript ? Self.maximumKeysPerCompletion : 1)
        let replies = try await executeCompletions(completions, calls)
        // A Redis Cluster proxy refuses a script whose keys lie in different hash slots, before it
        // runs: those completions go again one key per call, and so do this store's from now on.
        let refused = calls.indices.filter {
            calls[$0].count > 1 && replies[$0].errorText?.hasPrefix("CROSSSLOT") == true
        }
        var answered: [(keys: Range<Int>, reply: RedisReply)] = []
        if refused.isEmpty {
            answered = Array(zip(calls, replies))
        } else {
            if !refusesKeysAcrossSlots.exchange(true, ordering: .relaxed) {
                logger.warning(
                    "Redis refused a batch completion across hash slots (CROSSSLOT); completing one key per call from now on: set completesBatchesInOneScript to false for this server"
                )
            }
            let singles = refused.flatMap { calls[$0].map { $0..<$0 + 1 } }
            let singleReplies = try await executeCompletions(completions, singles)
            var next = 0
            for index in calls.indices {
                if refused.contains(index) {
                    for _ in calls[index] {
                        answered.append((singles[next], singleReplies[next]))
                        next += 1
                    }
                } else {
                    answered.append((calls[index], replies[index]))
                }
            }
        }
        var answers: [CompletionAnswer] = []
        answers.reserveCapacity(completions.count)
        var failure: (any Error)?
        for (keys, reply) in answered {
            do {
                try decodeCompletions(reply, count: keys.count, into: &answers)
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
        return answers
    }

    /// Set once a server refused a completion across hash slots (`CROSSSLOT`).
    private let refusesKeysAcrossSlots = Atomic<Bool>(false)

    /// Set once a cluster refused the completion script across slots (a server before Redis 7.0,
    /// or a proxy): completions go by slot from then on.
    let refusesScriptFlags = Atomic<Bool>(false)

    /// The calls a batch of completions takes: runs of up to `keysPerCall` completions with one
    /// retention (a consumer's all share it), in order; on a cluster, with keys of one hash slot.
    func completionCalls(_ completions: [Completion], keysPerCall: Int) -> [Range<Int>] {
        var calls: [Range<Int>] = []
        var start = completions.startIndex
        let slots = keysPerCall > 1 && isCluster ? completions.map { ClusterSlot.slot(of: key(for: $0.lease.id)) } : nil
        while start < completions.endIndex {
            let retention = completions[start].retention
            var end = start + 1
            while end < completions.endIndex, end - start < keysPerCall, completions[end].retention == retention,
                slots.map({ $0[end] == $0[start] }) ?? true
            {
                end += 1
            }
            calls.append(start..<end)
            start = end
        }
        return calls
    }

    /// One call of the completion script per range of `completions`, pipelined in one round trip.
    func executeCompletions(
        _ completions: [Completion],
        _ calls: [Range<Int>]
    ) async throws(DedupError) -> [RedisReply] {
        var pieces = sharedPieces
        // Through a buffer pointer: iterating, or subscripting the array, would copy each completion.
        let commands = completions.withUnsafeBufferPointer { completions in
            calls.map { completeCommand(UnsafeBufferPointer(rebasing: completions[$0]), &pieces) }
        }
        keep(pieces)
        return try await execute(commands)
    }

    /// Releases with one `EVALSHA` of the release script (the record is deleted).
    public func release(_ lease: Lease) async throws {
        let command = ownerCommand(RedisScript.release, lease, extraBytes: 0, extraArguments: 0)
        if try decodeFlag(try await single(command)) == false {
            throw leaseLost(lease, doing: "release")
        }
    }

    /// Renews with one `EVALSHA` of the renew script.
    public func renew(_ lease: Lease, for duration: Duration) async throws -> Lease {
        guard
            case .renewed(let renewed) = try decodeRenewal(try await single(renewCommand(lease, for: duration)), lease)
        else {
            throw leaseLost(lease, doing: "renew")
        }
        return renewed
    }

    /// Renews all the leases in one pipelined round trip, an `EVALSHA` of the renew script each
    /// (each touches one key, so the leases may lie in any hash slots).
    public func renew(batch leases: [Lease], for duration: Duration) async throws -> [RenewalAnswer] {
        if leases.isEmpty { return [] }
        let replies = try await execute(leases.map { renewCommand($0, for: duration) })
        return try zip(replies, leases).map { reply, lease in try decodeRenewal(reply, lease) }
    }

    /// The command pieces the last call encoded: calls with the same lease and retention (a
    /// consumer's all are) reuse them rather than encoding them again for every message.
    let piecesCache = Mutex(CommandPieces())

    // MARK: Connections

    /// The thread that owns the store's first connection, as a task executor for the tasks that
    /// call the store.
    ///
    /// Tasks that prefer it (`withTaskExecutorPreference(store.taskExecutor)`, or
    /// `group.addTask(executorPreference: store.taskExecutor)`) run on that thread between its round
    /// trips: the replies of a round trip resume them without a hop to another thread, and the
    /// commands they send next all go out in the next round trip, as a single-threaded pipelining
    /// client would do. Several consumer tasks sharing one store gain the most (see "Many tasks on
    /// one store" in <doc:DedupRedis>); calls past the 16 that the first connection takes at once
    /// go through the pool's other connections, whose replies cross threads again.
    ///
    /// The tasks' own code runs on that thread too, one task at a time: give it handlers that
    /// await their I/O, never ones that block or compute for long, which would hold up every call
    /// of the store. While the thread waits for a round trip's replies (up to
    /// ``Configuration/commandTimeout`` when the server does not answer, or a connect's
    /// ``Configuration/connectTimeout``) the tasks wait too; between reconnect attempts they run.
    ///
    /// On a Redis Cluster every call goes through the connections of the primaries its keys belong
    /// to, none through this thread (the URL's server is only asked for the slot map): tasks that
    /// prefer it gain nothing there.
    ///
    /// The executor stays valid for the life of the process (tasks do not keep their preferred
    /// executor alive); after ``close()`` it runs the jobs it is given on the global concurrent
    /// executor.
    public var taskExecutor: any TaskExecutor {
        let connection = seedPool.connections[0]
        connection.keepAliveForTasks()
        return connection
    }

    private nonisolated(nonsending) func single(_ command: RedisCommand) async throws(DedupError) -> RedisReply {
        try await execute([command])[0]
    }

    /// Runs commands as one pipelined unit on the least loaded connection, inline when the store is
    /// otherwise idle (see ``Configuration/runsIdleCallsInline``); on a cluster, one unit per
    /// primary their keys belong to (see <doc:RedisCluster>).
    nonisolated(nonsending) func execute(_ commands: [RedisCommand]) async throws(DedupError) -> [RedisReply] {
        let alone = activeCalls.wrappingAdd(1, ordering: .relaxed).oldValue == 0
        defer { activeCalls.wrappingSubtract(1, ordering: .relaxed) }
        let inline = alone && configuration.runsIdleCallsInline
        if topology.load(ordering: .relaxed) != Topology.single.rawValue {
            return try await executeRouted(commands, mayRunInline: inline)
        }
        return try await seedPool.pick().execute(commands, mayRunInline: inline)
    }
}
