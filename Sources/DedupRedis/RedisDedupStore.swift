import CHiredis
import Dedup
import Foundation
import Logging
import Synchronization

/// A ``DedupStore`` on a Redis server (7.0 or later), through the system hiredis.
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
/// fields, label and token, with the lease's (``Dedup/Lease/ownerLabel``). Values written by earlier
/// releases (`in_flight label=… owner=…`, `completed …`) are read, completed, renewed, released and
/// taken over as well.
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
    /// How the store connects and names its keys.
    public struct Configuration: Sendable {
        /// How long connecting may take (TCP or Unix socket connect). Default 2 s.
        public var connectTimeout: Duration
        /// How long a command's reply may take; past it the call throws
        /// ``DedupError/Code/timeout`` and the connection is replaced. Default 2 s.
        public var commandTimeout: Duration
        /// How many connections (each with its own I/O thread). Default 2: Redis executes commands
        /// on one thread, and concurrent calls on one connection are pipelined, so more connections
        /// mostly add threads; two keep one connection busy while the other's replies are parsed.
        public var poolSize: Int
        /// The first part of every key (`<keyPrefix>:<namespace length>:<namespace>:<key>`).
        /// Default `dedup`.
        public var keyPrefix: String
        /// How to reconnect after a connection fails.
        public var reconnect: ReconnectPolicy
        /// Whether a call made while no other call of this store is in progress does its round trip
        /// on the calling thread (bounded by ``commandTimeout``) rather than through a connection's
        /// I/O thread. Default `true`: the handoff to and from the I/O thread costs about as much as
        /// a loopback round trip, and with the store otherwise idle at most one cooperative thread
        /// waits, briefly. Concurrent calls always go through the I/O threads.
        public var runsIdleCallsInline: Bool
        /// Whether a batch of completions runs the completion script once for all its keys (up to
        /// ``RedisDedupStore/maximumKeysPerCompletion`` per call) rather than once per key. Default
        /// `true`: the script's fixed cost is most of a completion's cost on the server. Set it to
        /// `false` behind a Redis Cluster proxy, or anything else that refuses a script whose keys
        /// are in different hash slots (`CROSSSLOT`); each completion then takes a call of its own,
        /// all still pipelined in one round trip.
        public var completesBatchesInOneScript: Bool

        /// Creates a configuration; every argument has the documented default.
        public init(
            connectTimeout: Duration = .seconds(2), commandTimeout: Duration = .seconds(2), poolSize: Int = 2,
            keyPrefix: String = "dedup", reconnect: ReconnectPolicy = ReconnectPolicy(), runsIdleCallsInline: Bool = true,
            completesBatchesInOneScript: Bool = true
        ) {
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.poolSize = poolSize
            self.keyPrefix = keyPrefix
            self.reconnect = reconnect
            self.runsIdleCallsInline = runsIdleCallsInline
            self.completesBatchesInOneScript = completesBatchesInOneScript
        }
    }

    /// How a connection is re-established: up to ``maximumAttempts`` connects per call, waiting
    /// ``initialBackoff``, then twice as long each time up to ``maximumBackoff``, between them. A call
    /// that finds the server down therefore fails after the attempts (with
    /// ``DedupError/Code/storeUnavailable``); the next call tries again.
    public struct ReconnectPolicy: Sendable {
        /// Connects tried per call before it fails. Default 3.
        public var maximumAttempts: Int
        /// The wait before the second attempt. Default 50 ms.
        public var initialBackoff: Duration
        /// The longest wait between attempts. Default 1 s.
        public var maximumBackoff: Duration

        /// Creates a policy.
        public init(maximumAttempts: Int = 3, initialBackoff: Duration = .milliseconds(50), maximumBackoff: Duration = .seconds(1)) {
            self.maximumAttempts = maximumAttempts
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
        }
    }

    /// Where the server is; print ``RedisEndpoint/redactedDescription``, never the URL.
    public let endpoint: RedisEndpoint
    /// How the store connects and names its keys.
    public let configuration: Configuration

    private let logger: Logger
    private let connections: [RedisConnection]
    private let nextConnection = Atomic<Int>(0)
    /// Calls in progress, to allow the inline path only to a call that is alone.
    private let activeCalls = Atomic<Int>(0)
    private let keyPrefixBytes: [UInt8]

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
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for a malformed URL, `rediss://`, or
    ///   out-of-range configuration.
    public convenience init(url: String, configuration: Configuration = .init(), logger: Logger? = nil) throws {
        try self.init(endpoint: RedisEndpoint(url: url), configuration: configuration, logger: logger)
    }

    /// Creates a store for an endpoint; connects on first use.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for out-of-range configuration.
    public init(endpoint: RedisEndpoint, configuration: Configuration = .init(), logger: Logger? = nil) throws {
        let logger = logger ?? Logger.current
        func invalid(_ why: String) -> DedupError { DedupError(.invalidConfiguration, "Redis store configuration: \(why)") }
        guard configuration.connectTimeout > .zero else { throw invalid("connectTimeout must be positive") }
        guard configuration.commandTimeout > .zero else { throw invalid("commandTimeout must be positive") }
        guard (1...64).contains(configuration.poolSize) else { throw invalid("poolSize must be between 1 and 64, not \(configuration.poolSize)") }
        guard !configuration.keyPrefix.isEmpty else { throw invalid("keyPrefix must not be empty") }
        guard configuration.reconnect.maximumAttempts >= 1 else { throw invalid("reconnect.maximumAttempts must be at least 1") }
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
            endpoint: endpoint, connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout,
            reconnect: configuration.reconnect, logger: logger
        )
        self.connections = (0..<configuration.poolSize).map { RedisConnection(settings: settings, index: $0) }
    }

    deinit {
        for connection in connections { connection.closeSoon() }
    }

    /// Closes every connection and stops their threads; later calls throw
    /// ``DedupError/Code/storeUnavailable``.
    public func close() async {
        for connection in connections { await connection.close() }
    }

    /// Sends `PING` and returns the round-trip time (the connection is made first if needed, and
    /// not counted).
    ///
    /// - Throws: ``DedupError`` when the server cannot be reached or refuses the login.
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
    /// The lease's ``Lease/leaseUntil`` is the server's time just before the `SET` plus the lease:
    /// never later than the record's, and equal to it up to the milliseconds between the two.
    public func claim(_ request: ClaimRequest) async throws -> ClaimAnswer {
        try ClaimRequest.validate(brokerTime: request.brokerTime)
        var pieces = sharedPieces
        let headerStart = try pieces.ownerHeaderStart(claimingAs: request.ownerLabel)
        let command = fastClaimCommand(
            request.id, request.ownerToken, headerStart, request.fingerprint, brokerMilliseconds: request.brokerMilliseconds,
            lease: request.lease, retention: request.retention, &pieces)
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
            replies[1], request.id, request.ownerToken, request.ownerLabel, request.fingerprint, lease: request.lease, now: now,
            pieces: &pieces)
        {
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
                            replies[index + 1], requests[index].id, requests[index].ownerToken, requests[index].ownerLabel,
                            requests[index].fingerprint, lease: requests[index].lease, now: now, pieces: &pieces)
                        {
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
                    unsettled.map { scriptClaimCommand(requests[$0], pieces.ownerHeaderStart(requests[$0].ownerLabel)) })
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
                id: request.id, ownerToken: request.ownerToken, fencingToken: 1, attempt: 1,
                leaseUntil: Date(timeIntervalSince1970: 0), isTakeover: false, ownerLabel: request.ownerLabel
            )
        }
        await releaseAfterFailedClaim(created)
    }

    /// Best effort after a failed claim: releases what it acquired (their owner checks keep
    /// anyone else's record safe); a failure here leaves those keys to their leases, as before.
    private func releaseAfterFailedClaim(_ leases: [Lease]) async {
        if leases.isEmpty { return }
        do {
            _ = try await execute(leases.map { ownerCommand(RedisScript.release, $0, extraBytes: 0, extraArguments: 0) })
        } catch {
            logger.warning(
                "could not release the keys of a failed batch claim; they stay in flight until their leases pass",
                metadata: ["keys": "\(leases.count)", "error": "\(error)"]
            )
        }
    }

    private static let timeCommand = RedisCommand("TIME")

    /// Stands in the answers of a batch for those the claim script is still to decide.
    private static let placeholderLease = Lease(
        id: RecordID(uncheckedNamespace: "-", key: "-"), ownerToken: "", fencingToken: 0, attempt: 0,
        leaseUntil: Date(timeIntervalSince1970: 0), isTakeover: false
    )

    /// Completes with one `EVALSHA` of the complete script.
    public func complete(_ completion: Completion) async throws {
        var pieces = sharedPieces
        let command = withUnsafePointer(to: completion) { completeCommand(UnsafeBufferPointer(start: $0, count: 1), &pieces) }
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
        let calls = completionCalls(completions, keysPerCall: oneScript ? Self.maximumKeysPerCompletion : 1)
        let replies = try await executeCompletions(completions, calls)
        // A Redis Cluster proxy refuses a script whose keys lie in different hash slots, before it
        // runs: those completions go again one key per call, and so do this store's from now on.
        let refused = calls.indices.filter { calls[$0].count > 1 && replies[$0].errorText?.hasPrefix("CROSSSLOT") == true }
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

    /// The calls a batch of completions takes: runs of up to `keysPerCall` completions with one
    /// retention (a consumer's all share it), in order.
    private func completionCalls(_ completions: [Completion], keysPerCall: Int) -> [Range<Int>] {
        var calls: [Range<Int>] = []
        var start = completions.startIndex
        while start < completions.endIndex {
            let retention = completions[start].retention
            var end = start + 1
            while end < completions.endIndex, end - start < keysPerCall, completions[end].retention == retention { end += 1 }
            calls.append(start..<end)
            start = end
        }
        return calls
    }

    /// One call of the completion script per range of `completions`, pipelined in one round trip.
    private func executeCompletions(_ completions: [Completion], _ calls: [Range<Int>]) async throws(DedupError) -> [RedisReply] {
        var pieces = sharedPieces
        // Through a buffer pointer: iterating, or subscripting the array, would copy each completion.
        let commands = completions.withUnsafeBufferPointer { completions in
            calls.map { completeCommand(UnsafeBufferPointer(rebasing: completions[$0]), &pieces) }
        }
        keep(pieces)
        return try await execute(commands)
    }

    /// The completion script's answers for `count` keys, appended in order; throws the first
    /// error among them (after reading them all).
    private func decodeCompletions(_ reply: RedisReply, count: Int, into answers: inout [CompletionAnswer]) throws {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let flags = reply.arrayValue, flags.count == count else { throw unexpected(reply, doing: "the complete script") }
        var failure: (any Error)?
        for flag in flags {
            do {
                answers.append(try decodeFlag(flag) ? .completed : .leaseLost)
            } catch {
                failure = failure ?? error
                answers.append(.leaseLost)
            }
        }
        if let failure { throw failure }
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
        guard case .renewed(let renewed) = try decodeRenewal(try await single(renewCommand(lease, for: duration)), lease) else {
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

    private func renewCommand(_ lease: Lease, for duration: Duration) -> RedisCommand {
        var command = ownerCommand(RedisScript.renew, lease, extraBytes: 20, extraArguments: 1)
        command.append(duration.wholeMilliseconds)
        return command
    }

    private func decodeRenewal(_ reply: RedisReply, _ lease: Lease) throws -> RenewalAnswer {
        if case .integer(0) = reply { return .leaseLost }
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, fields.count == 2, let leaseUntil = fields[1].integerValue else {
            throw unexpected(reply, doing: "renew")
        }
        var renewed = lease
        renewed.leaseUntil = Date(millisecondsSince1970: leaseUntil)
        return .renewed(renewed)
    }

    // MARK: Inspection

    /// The record of one identity (`TIME` and the read script in one round trip).
    public func record(for id: RecordID) async throws -> DedupRecord? {
        let replies = try await execute([RedisCommand("TIME"), readCommand(key(for: id))])
        let now = try serverTime(replies[0])
        guard let record = try decodeRead(replies[1], id: id, strict: true), now < record.expiresAt.millisecondsSince1970 else {
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
    /// follow: keep reading while ``RecordPage/next`` is not `nil`.
    public func records(matching filter: RecordFilter, after cursor: PageCursor?, limit: Int) async throws -> RecordPage {
        guard limit > 0 else { throw DedupError(.invalidConfiguration, "the page limit must be positive, not \(limit)") }
        var scanCursor = "0"
        var skipThrough: [UInt8]?
        if let cursor {
            let parts = cursor.token.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let first = parts.first, UInt64(first) != nil,
                parts.count == 1 || Self.unhex(parts[1]) != nil
            else {
                throw DedupError(.invalidConfiguration, "not a Redis page cursor: \(cursor.token.debugDescription)")
            }
            scanCursor = String(first)
            if parts.count == 2 { skipThrough = Self.unhex(parts[1]) }
        }
        let pattern = matchPattern(for: filter)
        var page: [DedupRecord] = []
        var batches = 0
        repeat {
            let (nextCursor, scanned) = try await scan(cursor: scanCursor, pattern: pattern, count: max(limit, 10))
            var keys = scanned.sorted { $0.lexicographicallyPrecedes($1) }
            if let skipThrough { keys.removeAll { !skipThrough.lexicographicallyPrecedes($0) } }
            skipThrough = nil
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
                            return RecordPage(records: page, next: PageCursor(token: scanCursor + ":" + Self.hex(key)))
                        }
                        return RecordPage(records: page, next: nextCursor == "0" ? nil : PageCursor(token: nextCursor))
                    }
                }
            }
            scanCursor = nextCursor
            batches += 1
        } while scanCursor != "0" && batches < 64
        return RecordPage(records: page, next: scanCursor == "0" ? nil : PageCursor(token: scanCursor))
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
        var cursor = "0"
        repeat {
            let (next, keys) = try await scan(cursor: cursor, pattern: pattern, count: 1000)
            cursor = next
            if keys.isEmpty { continue }
            let replies = try await execute([RedisCommand("TIME")] + keys.map(readCommand))
            let now = try serverTime(replies[0])
            for (position, key) in keys.enumerated() {
                guard let id = recordID(fromKey: key), let record = try decodeRead(replies[position + 1], id: id, strict: false),
                    now < record.expiresAt.millisecondsSince1970
                else { continue }
                var entry = counts[id.namespace] ?? Counts()
                switch record.state {
                case .inFlight:
                    entry.inFlight += 1
                    if let leaseUntil = record.leaseUntil, leaseUntil.millisecondsSince1970 <= now { entry.expiredLeases += 1 }
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
        let namespaces = counts.map { namespace, entry in
            DedupStats.NamespaceStats(
                namespace: namespace, inFlight: entry.inFlight, expiredLeases: entry.expiredLeases, completed: entry.completed,
                oldest: entry.oldest.map { Date(millisecondsSince1970: $0) }, newest: entry.newest.map { Date(millisecondsSince1970: $0) },
                oldestBrokerTime: entry.oldestBroker, newestBrokerTime: entry.newestBroker
            )
        }.sorted { $0.namespace.utf8.lexicographicallyPrecedes($1.namespace.utf8) }
        return DedupStats(namespaces: namespaces)
    }

    // MARK: Commands

    /// The command pieces the last call encoded: calls with the same lease and retention (a
    /// consumer's all are) reuse them rather than encoding them again for every message.
    private let piecesCache = Mutex(CommandPieces())

    private var sharedPieces: CommandPieces { piecesCache.withLock { $0 } }

    /// Keeps what a call encoded anew; a call that found every piece cached writes nothing back.
    private func keep(_ pieces: CommandPieces) {
        guard pieces.encodedAnew else { return }
        var pieces = pieces
        pieces.encodedAnew = false
        piecesCache.withLock { [pieces] in $0 = pieces }
    }

    /// The Redis key of a record: `<keyPrefix>:<RecordID.encoded>` as bytes (NUL and all).
    func key(for id: RecordID) -> [UInt8] {
        keyPrefixBytes + Array(id.encoded.utf8)
    }

    /// `EVALSHA <sha> 1 <key>`, with room for the script's other arguments.
    private func scriptCommand(_ script: RedisScript, key id: RecordID, extraBytes: Int, extraArguments: Int) -> RedisCommand {
        var command = script.callPrefix
        let key = key(for: id)
        command.reserve(extraBytes: key.count + extraBytes, extraArguments: 1 + extraArguments)
        command.append(key)
        return command
    }

    /// `TIME`, then a claim's `SET` for each request. The requests' fields are passed one by one,
    /// read in place from the borrowed array: passing a whole request copies it (its strings
    /// retained, then released), whether read from the array or through a buffer pointer.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for an invalid owner label, before any
    ///   command is sent.
    private func fastClaimCommands(_ requests: borrowing [ClaimRequest], _ pieces: inout CommandPieces) throws(DedupError) -> [RedisCommand] {
        var commands: [RedisCommand] = []
        commands.reserveCapacity(requests.count + 1)
        commands.append(Self.timeCommand)
        for index in requests.indices {
            try ClaimRequest.validate(brokerTime: requests[index].brokerTime)
        }
        for index in requests.indices {
            let headerStart = try pieces.ownerHeaderStart(claimingAs: requests[index].ownerLabel)
            commands.append(
                fastClaimCommand(
                    requests[index].id, requests[index].ownerToken, headerStart, requests[index].fingerprint,
                    brokerMilliseconds: requests[index].brokerMilliseconds, lease: requests[index].lease,
                    retention: requests[index].retention, &pieces))
        }
        return commands
    }

    /// `SET <key> <new in-flight record> NX PX <lease + retention - 1> GET`: the key expires one
    /// millisecond before the record does (see ``RedisScript``). `headerStart` is the owner
    /// header's start for the claim's label (``CommandPieces/ownerHeaderStart(claimingAs:)``); the
    /// broker time and the fingerprint, if any, follow the lease times (``RecordValue``).
    private func fastClaimCommand(
        _ id: RecordID, _ ownerToken: String, _ headerStart: [UInt8], _ fingerprint: String?, brokerMilliseconds: Int64?,
        lease: Duration, retention: Duration, _ pieces: inout CommandPieces
    ) -> RedisCommand {
        let (middle, tail) = pieces.claim(lease: lease, retention: retention)
        let brokerField = RecordValue.brokerTimeField(brokerMilliseconds)
        var token = ownerToken
        return token.withUTF8 { token in
            let keyLength = keyLength(id)
            let valueLength = RecordValue.ownerHeaderLength(startBytes: headerStart.count, tokenBytes: token.count)
                + middle.count + brokerField.count + RecordValue.fingerprintFieldLength(fingerprint)
            let capacity = Self.setArgument.count + 2 * 24 + keyLength + valueLength + tail.count
            return RedisCommand(count: 7, capacity: capacity) { writer in
                writer.encoded(Self.setArgument, arguments: 1)
                writeKey(id, length: keyLength, to: &writer)
                writer.bulkHeader(valueLength)
                RecordValue.writeOwnerHeader(start: headerStart, UnsafeRawBufferPointer(token), to: &writer)
                writer.raw(middle)
                if !brokerField.isEmpty { writer.raw(brokerField) }
                RecordValue.writeFingerprintField(fingerprint, to: &writer)
                writer.finish()
                writer.encoded(tail, arguments: 4)
            }
        }
    }

    /// `$3\r\nSET\r\n`: a claim's first argument, encoded.
    private static let setArgument: [UInt8] = RedisCommand("SET").body

    /// The exact byte count of a record's key.
    private func keyLength(_ id: RecordID) -> Int {
        let namespace = id.namespace.utf8.count
        return keyPrefixBytes.count + RespWriter.digitCount(namespace) + 1 + namespace + 1 + id.key.utf8.count
    }

    /// The record's key as one argument: `<keyPrefix>:<namespace byte count>:<namespace>:<key>`.
    private func writeKey(_ id: RecordID, length: Int, to writer: inout RespWriter) {
        writer.bulkHeader(length)
        writer.raw(keyPrefixBytes)
        writer.lengthPrefixed(id.namespace)
        writer.raw(UInt8(ascii: ":"))
        writer.raw(id.key)
        writer.finish()
    }

    /// The claim script's call: the new record, then its owner header alone, the lease, the
    /// retention as the record writes it and the fingerprint as the script compares it.
    private func scriptClaimCommand(_ request: ClaimRequest, _ headerStart: [UInt8]) -> RedisCommand {
        let lease = request.lease.wholeMilliseconds
        let retention = request.retention.wholeMilliseconds
        var command = scriptCommand(
            RedisScript.claim, key: request.id,
            extraBytes: 2 * (request.ownerToken.utf8.count + headerStart.count) + 180 + 2 * (request.fingerprint?.utf8.count ?? 0),
            extraArguments: 5
        )
        var header = headerStart
        RecordValue.appendLengthPrefixed(request.ownerToken, to: &header)
        header.append(UInt8(ascii: " "))
        command.append {
            $0.append(contentsOf: header)
            RecordValue.appendNewLeaseTimes(leaseMilliseconds: lease, retentionMilliseconds: retention, to: &$0)
            $0.append(contentsOf: RecordValue.brokerTimeField(request.brokerMilliseconds))
            RecordValue.appendFingerprintField(request.fingerprint, to: &$0)
        }
        command.append(header)
        command.append(lease)
        command.append { RecordValue.appendDuration(retention, to: &$0) }
        command.append(RecordValue.encodedFingerprint(request.fingerprint))
        return command
    }

    /// `EVALSHA <sha> 1 <key> <owner header>`: the start of an owner-checked script's call.
    private func ownerCommand(_ script: RedisScript, _ lease: Lease, extraBytes: Int, extraArguments: Int) -> RedisCommand {
        var command = scriptCommand(
            script, key: lease.id, extraBytes: lease.ownerToken.utf8.count + (lease.ownerLabel?.utf8.count ?? 0) + 32 + extraBytes,
            extraArguments: 1 + extraArguments
        )
        command.append { RecordValue.appendOwnerHeader(lease.ownerToken, label: lease.ownerLabel, to: &$0) }
        return command
    }

    /// `EVALSHA <complete> <n> <key>… <retention ms> <retention field>` and, per completion, `<owner
    /// header> <result field> <first claim or "">`, written in one pass. The completions share a
    /// retention.
    private func completeCommand(_ completions: UnsafeBufferPointer<Completion>, _ pieces: inout CommandPieces) -> RedisCommand {
        let retention = pieces.retentionArgument(completions[0].retention)
        var capacity = Self.completePrefix.count + 24 + retention.count
        for index in completions.indices {
            capacity += 4 * 24 + keyLength(completions[index].lease.id) + completions[index].lease.ownerToken.utf8.count
            capacity += pieces.ownerHeaderStart(completions[index].lease.ownerLabel).count
            capacity += completions[index].result.map { RecordValue.resultArgumentOverhead + $0.count } ?? 0
        }
        return RedisCommand(count: 3 + 4 * completions.count + 2, capacity: capacity) { writer in
            writer.encoded(Self.completePrefix, arguments: 2)
            writer.bulkHeader(RespWriter.digitCount(completions.count))
            writer.decimal(Int64(completions.count))
            writer.finish()
            for index in completions.indices {
                writeKey(completions[index].lease.id, length: keyLength(completions[index].lease.id), to: &writer)
            }
            writer.encoded(retention, arguments: 2)
            for index in completions.indices {
                Self.writeCompletionArguments(
                    completions[index], headerStart: pieces.ownerHeaderStart(completions[index].lease.ownerLabel), to: &writer)
            }
        }
    }

    /// A completion's owner header (from `headerStart`, its start for the lease's label), result
    /// field and first claim (Unix ms in base 36, or empty when the lease does not say, or says a
    /// time the value could not hold: the script reads it then).
    private static func writeCompletionArguments(_ completion: Completion, headerStart: [UInt8], to writer: inout RespWriter) {
        let lease = completion.lease
        var token = lease.ownerToken
        token.withUTF8 { token in
            writer.bulkHeader(RecordValue.ownerHeaderLength(startBytes: headerStart.count, tokenBytes: token.count))
            RecordValue.writeOwnerHeader(start: headerStart, UnsafeRawBufferPointer(token), to: &writer)
            writer.finish()
        }
        RecordValue.writeResultArgument(completion.result, to: &writer)
        let claimed = lease.claimedAt.flatMap { date -> Int64? in
            let milliseconds = date.timeIntervalSince1970 * 1000
            return milliseconds >= 0 && milliseconds <= Double(RecordValue.latestExpiry) ? date.millisecondsSince1970 : nil
        }
        RecordValue.writeFirstClaimArgument(claimed, to: &writer)
    }

    /// The completion script's Lua source, for a benchmark that sends our protocol from another
    /// client.
    package static var completionScriptSource: String { RedisScript.complete.source }

    /// `EVALSHA <complete sha>`, encoded (the key count follows).
    private static let completePrefix: [UInt8] = RedisCommand("EVALSHA", RedisScript.complete.sha).body

    private func readCommand(_ key: [UInt8]) -> RedisCommand {
        var command = RedisScript.read.callPrefix
        command.append(key)
        return command
    }

    private func scan(cursor: String, pattern: [UInt8], count: Int) async throws -> (String, [[UInt8]]) {
        var command = RedisCommand("SCAN", cursor, "MATCH")
        command.append(pattern)
        command.append("COUNT")
        command.append(String(count))
        command.append("TYPE")
        command.append("string")
        let replies = try await execute([command])
        let reply = replies[0]
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let parts = reply.arrayValue, parts.count == 2, let next = parts[0].stringValue, let keys = parts[1].arrayValue else {
            throw unexpected(reply, doing: "SCAN")
        }
        return (next, keys.compactMap(\.bytesValue))
    }

    /// The least loaded connection, starting the search at a rotating position so ties spread.
    private func pick() -> RedisConnection {
        let count = connections.count
        if count == 1 { return connections[0] }
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

    private func single(_ command: RedisCommand) async throws(DedupError) -> RedisReply {
        try await execute([command])[0]
    }

    /// Runs commands as one pipelined unit on the least loaded connection, inline when the store is
    /// otherwise idle (see ``Configuration/runsIdleCallsInline``).
    func execute(_ commands: [RedisCommand]) async throws(DedupError) -> [RedisReply] {
        let alone = activeCalls.wrappingAdd(1, ordering: .relaxed).oldValue == 0
        defer { activeCalls.wrappingSubtract(1, ordering: .relaxed) }
        return try await pick().execute(commands, mayRunInline: alone && configuration.runsIdleCallsInline)
    }

    // MARK: Decoding

    /// The answer of the claim's `SET … NX GET`; `nil` when the key is in flight (or its completed
    /// value is past its expiry) and the claim script must decide.
    private func decodeFastClaim(
        _ reply: RedisReply, _ id: RecordID, _ ownerToken: String, _ ownerLabel: String, _ fingerprint: String?, lease: Duration,
        now: Int64, pieces: inout CommandPieces
    ) throws -> ClaimAnswer? {
        switch reply {
        case .null:
            return .acquired(
                Lease(
                    id: id, ownerToken: ownerToken, fencingToken: 1, attempt: 1,
                    leaseUntil: Date(millisecondsSince1970: now &+ pieces.milliseconds(lease)), isTakeover: false,
                    claimedAt: Date(millisecondsSince1970: now), ownerLabel: ownerLabel
                )
            )
        case .string(let value):
            if RecordValue.isInFlight(value) { return nil }
            let record = try completedRecord(value, id: id)
            // A key can outlive its record (its expiry moved later behind the store's back): past
            // its expiry the record is gone, and the claim script takes the key.
            if record.expiresAt.millisecondsSince1970 <= now { return nil }
            return Self.answer(finding: record, fingerprint: fingerprint)
        case .error(let text):
            if text.hasPrefix("ERR syntax error") {
                throw DedupError(
                    .storeError,
                    "Redis at \(endpoint.redactedDescription) refused SET … NX GET: the dedup store needs Redis 7.0 or later (\(text))"
                )
            }
            throw DedupError.fromServer(text, endpoint: endpoint)
        default:
            throw unexpected(reply, doing: "claim")
        }
    }

    /// The claim script's answer: created, taken over, completed or in flight.
    private func decodeScriptClaim(_ reply: RedisReply, request: ClaimRequest) throws -> ClaimAnswer {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, let code = fields.first?.integerValue else {
            throw unexpected(reply, doing: "claim")
        }
        switch (code, fields.count) {
        case (0, 3), (1, 5):
            let isTakeover = code == 1
            guard let leaseUntil = fields[fields.count - 2].integerValue, let created = fields[fields.count - 1].integerValue,
                let fencing = isTakeover ? fields[1].integerValue : 1, let attempt = isTakeover ? fields[2].integerValue : 1
            else { throw unexpected(reply, doing: "claim") }
            return .acquired(
                Lease(
                    id: request.id, ownerToken: request.ownerToken, fencingToken: fencing, attempt: Int(attempt),
                    leaseUntil: Date(millisecondsSince1970: leaseUntil), isTakeover: isTakeover,
                    claimedAt: Date(millisecondsSince1970: created), ownerLabel: request.ownerLabel
                )
            )
        case (2, 2):
            guard let value = fields[1].bytesValue else { throw unexpected(reply, doing: "claim") }
            return Self.answer(finding: try completedRecord(value, id: request.id), fingerprint: request.fingerprint)
        case (3, 3):
            guard let value = fields[1].bytesValue, let expires = fields[2].integerValue,
                let record = RecordValue.decode(value, id: request.id, expiresMilliseconds: expires)
            else { throw corrupt(request.id) }
            return Self.differ(request.fingerprint, record.fingerprint) ? .payloadMismatch(record) : .inFlight(record)
        default:
            throw unexpected(reply, doing: "claim")
        }
    }

    /// The completed record a claim found.
    private func completedRecord(_ value: [UInt8], id: RecordID) throws -> DedupRecord {
        guard RecordValue.isCompleted(value), let record = RecordValue.decode(value, id: id, expiresMilliseconds: nil) else {
            throw corrupt(id)
        }
        return record
    }

    /// A completed record found by a claim: a duplicate, or a payload mismatch when both sides
    /// carry a fingerprint and they differ.
    private static func answer(finding record: DedupRecord, fingerprint: String?) -> ClaimAnswer {
        differ(fingerprint, record.fingerprint) ? .payloadMismatch(record) : .duplicate(record)
    }

    private static func differ(_ requested: String?, _ stored: String?) -> Bool {
        guard let requested, let stored else { return false }
        return !requested.utf8.elementsEqual(stored.utf8)
    }

    /// A record from the read script's reply ({value, PEXPIRETIME}); `nil` for no key. A value that
    /// is not a dedup record throws ``DedupError/Code/corruptStore`` when `strict`, and is skipped
    /// otherwise (listing goes on past someone else's string).
    private func decodeRead(_ reply: RedisReply, id: RecordID, strict: Bool) throws -> DedupRecord? {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let fields = reply.arrayValue, fields.count == 2, let expiryTime = fields[1].integerValue else {
            throw unexpected(reply, doing: "read")
        }
        guard let value = fields[0].bytesValue else { return nil }
        // A completed value dates itself; an in-flight one needs the key's expiry.
        let expires = expiryTime >= 0 && expiryTime < RecordValue.latestExpiry ? expiryTime + 1 : nil
        if let record = RecordValue.decode(value, id: id, expiresMilliseconds: expires) {
            return record
        }
        if strict { throw corrupt(id) }
        logger.debug("Skipping a value that is not a dedup record", metadata: ["record": "\(id)"])
        return nil
    }

    private func corrupt(_ id: RecordID) -> DedupError {
        DedupError(.corruptStore, "Redis at \(endpoint.redactedDescription): the value at the key of \(id) is not a dedup record")
    }

    private func decodeFlag(_ reply: RedisReply) throws -> Bool {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        switch reply.integerValue {
        case 1: return true
        case 0: return false
        default: throw unexpected(reply, doing: "a dedup script")
        }
    }

    private func serverTime(_ reply: RedisReply) throws -> Int64 {
        if let text = reply.errorText { throw DedupError.fromServer(text, endpoint: endpoint) }
        guard let parts = reply.arrayValue, parts.count == 2, let seconds = parts[0].integerValue, let micros = parts[1].integerValue else {
            throw unexpected(reply, doing: "TIME")
        }
        return seconds * 1000 + micros / 1000
    }

    private func recordID(fromKey key: [UInt8]) -> RecordID? {
        guard key.starts(with: keyPrefixBytes) else { return nil }
        let text = String(decoding: key[keyPrefixBytes.count...], as: UTF8.self)
        return RecordID(encoded: Substring(text))
    }

    private func leaseLost(_ lease: Lease, doing: String) -> DedupError {
        DedupError(
            .leaseLost,
            "cannot \(doing) \(lease.id): the lease (fencing token \(lease.fencingToken)) is no longer current (taken over, released, completed or expired)"
        )
    }

    private func unexpected(_ reply: RedisReply, doing: String) -> DedupError {
        DedupError(.storeError, "Redis at \(endpoint.redactedDescription) gave an unexpected reply to \(doing): \(reply)")
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
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "\\"), UInt8(ascii: "^"), UInt8(ascii: "-"):
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

/// Whole milliseconds of the durations a call converts, remembering the last two: a batch's
/// requests share their lease and retention, and converting a `Duration` costs hundreds of
/// instructions.
struct DurationMilliseconds {
    private var first: (Duration, Int64)?
    private var second: (Duration, Int64)?

    mutating func milliseconds(_ duration: Duration, encodedAnew: inout Bool) -> Int64 {
        if let first, first.0 == duration { return first.1 }
        if let second, second.0 == duration { return second.1 }
        encodedAnew = true
        let value = duration.wholeMilliseconds
        second = first
        first = (duration, value)
        return value
    }
}

/// The parts of the hot commands that depend only on the lease and retention, encoded once and
/// kept by the store while they stay the same (a consumer's calls all share them).
struct CommandPieces {
    private var durations = DurationMilliseconds()
    private var claimPieces: (lease: Duration, retention: Duration, middle: [UInt8], tail: [UInt8])?
    private var retentionPiece: (retention: Duration, argument: [UInt8])?
    /// The owner header's start (``RecordValue/ownerHeaderStart(label:)``) for the labels of the
    /// latest calls, and whether the label may claim (``ClaimRequest/validate(ownerLabel:)``): a
    /// consumer's calls all carry one label, a store shared by a few consumers a few.
    private var headerStarts: [(label: String?, bytes: [UInt8], isValid: Bool)] = []
    /// Set when a piece was encoded since the copy was taken: only then is it worth keeping.
    var encodedAnew = false

    /// The owner header's start for a lease's label, encoded once per label.
    mutating func ownerHeaderStart(_ label: String?) -> [UInt8] {
        headerStarts[headerStartIndex(label)].bytes
    }

    /// The owner header's start for a claim's label, which is checked once, when first encoded.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for an empty or over-long label.
    mutating func ownerHeaderStart(claimingAs label: String) throws(DedupError) -> [UInt8] {
        let index = headerStartIndex(label)
        if !headerStarts[index].isValid { try ClaimRequest.validate(ownerLabel: label) }
        return headerStarts[index].bytes
    }

    private mutating func headerStartIndex(_ label: String?) -> Int {
        // By index: iterating would copy every entry. By bytes: `==` would take a canonically
        // equivalent label ("é", "e\u{301}") for this one, and write its bytes instead.
        for index in headerStarts.indices where Self.sameBytes(headerStarts[index].label, label) { return index }
        if headerStarts.count == 4 { headerStarts.removeFirst() }
        let isValid = label.map { (try? ClaimRequest.validate(ownerLabel: $0)) != nil } ?? false
        headerStarts.append((label, RecordValue.ownerHeaderStart(label: label), isValid))
        encodedAnew = true
        return headerStarts.count - 1
    }

    private static func sameBytes(_ lhs: String?, _ rhs: String?) -> Bool {
        guard let lhs, let rhs else { return lhs == nil && rhs == nil }
        return lhs.utf8.count == rhs.utf8.count && lhs.utf8.elementsEqual(rhs.utf8)
    }

    mutating func milliseconds(_ duration: Duration) -> Int64 {
        durations.milliseconds(duration, encodedAnew: &encodedAnew)
    }

    /// For a claim's `SET`: the new record's lease times after its owner header (`<lease span>
    /// <retention>`, ``RecordValue/appendNewLeaseTimes(leaseMilliseconds:retentionMilliseconds:to:)``)
    /// and the encoded arguments after the value (`NX PX <lease + retention - 1> GET`).
    mutating func claim(lease leaseDuration: Duration, retention retentionDuration: Duration) -> (middle: [UInt8], tail: [UInt8]) {
        if let claimPieces, claimPieces.lease == leaseDuration, claimPieces.retention == retentionDuration {
            return (claimPieces.middle, claimPieces.tail)
        }
        let lease = milliseconds(leaseDuration)
        let retention = milliseconds(retentionDuration)
        var middle: [UInt8] = []
        RecordValue.appendNewLeaseTimes(leaseMilliseconds: lease, retentionMilliseconds: retention, to: &middle)
        var tail = RedisCommand("NX", "PX")
        let (total, overflow) = lease.addingReportingOverflow(retention)
        // The key expires one millisecond before the record (at least 1, which Redis requires).
        tail.append(overflow ? Int64.max / 2 : max(1, total - 1))
        tail.append("GET")
        claimPieces = (leaseDuration, retentionDuration, middle, tail.body)
        encodedAnew = true
        return (middle, tail.body)
    }

    /// A completion's retention, encoded as the completion script's two arguments (milliseconds,
    /// then the value's duration field).
    mutating func retentionArgument(_ retention: Duration) -> [UInt8] {
        if let retentionPiece, retentionPiece.retention == retention { return retentionPiece.argument }
        var argument = RedisCommand()
        RecordValue.appendRetentionArguments(milliseconds(retention), to: &argument)
        retentionPiece = (retention, argument.body)
        encodedAnew = true
        return argument.body
    }
}
