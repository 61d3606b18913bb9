import CHiredis
import Dedup
import Foundation
import Logging
import Synchronization

/// A mutex with a condition variable, for handing work to an I/O thread that sleeps when idle.
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func wait() { pthread_cond_wait(condition, mutex) }
    func signal() { pthread_cond_signal(condition) }
}

/// What a connection needs to know to connect and log in.
package struct ConnectionSettings: Sendable {
    package var endpoint: RedisEndpoint
    package var connectTimeout: Duration
    package var commandTimeout: Duration
    package var reconnect: RedisDedupStore.ReconnectPolicy
    package var logger: Logger

    package init(
        endpoint: RedisEndpoint, connectTimeout: Duration, commandTimeout: Duration, reconnect: RedisDedupStore.ReconnectPolicy,
        logger: Logger
    ) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnect = reconnect
        self.logger = logger
    }
}

/// One hiredis connection and the thread that owns it.
///
/// Callers enqueue a batch of commands and suspend; the thread takes everything queued, writes it
/// all to the socket with one `send`, reads the replies in order and resumes the callers.
/// Concurrent callers therefore share round trips (automatic pipelining), and a blocking network
/// wait parks this thread, never one of Swift's cooperative threads.
package final class RedisConnection: @unchecked Sendable {
    private struct Job {
        var commands: [RedisCommand]
        var continuation: UnsafeContinuation<Result<[RedisReply], DedupError>, Never>
    }

    private let settings: ConnectionSettings
    private let index: Int
    /// Jobs queued or being processed: the pool sends new work to the least loaded connection.
    let load = Atomic<Int>(0)

    // Guarded by `lock`.
    private let lock = ConditionLock()
    private var pending: [Job] = []
    private var closed = false
    private var started = false
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []
    private var exited = false
    /// `true` while the I/O thread or an inline caller is using `context`.
    private var busy = false

    // Used only by whoever set `busy` (the I/O thread or an inline caller).
    private var context: UnsafeMutablePointer<redisContext>?
    /// Where the context's reader builds each reply (not `replies`: that names the values read).
    private let replyBuffer = ReplyBuffer()

    package init(settings: ConnectionSettings, index: Int) {
        self.settings = settings
        self.index = index
    }

    /// Sends commands as one pipelined unit and returns their replies in order. Error replies are
    /// returned as ``RedisReply/error(_:)``; a failure of the connection itself is thrown.
    ///
    /// With `mayRunInline`, a caller that finds the connection idle, connected and healthy does the
    /// round trip itself (bounded by the command timeout) instead of handing it to the I/O thread:
    /// the handoff costs two thread wake-ups, as much as the round trip on loopback. The store
    /// allows it only when no other call of the store is in progress, so at most one cooperative
    /// thread waits on the network and only while nothing else wants the store.
    package func execute(_ commands: [RedisCommand], mayRunInline: Bool = false) async throws(DedupError) -> [RedisReply] {
        load.add(1, ordering: .relaxed)
        defer { load.subtract(1, ordering: .relaxed) }
        if mayRunInline {
            lock.lock()
            if !closed && !busy && pending.isEmpty && context != nil {
                busy = true
                lock.unlock()
                let result = runInline(commands)
                lock.lock()
                busy = false
                // Wake the I/O thread only if it has work (or must close): a needless wake-up costs
                // two context switches.
                if !pending.isEmpty || closed { lock.signal() }
                lock.unlock()
                if let result { return try result.get() }
            } else {
                lock.unlock()
            }
        }
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[RedisReply], DedupError>, Never>) in
            lock.lock()
            if closed {
                lock.unlock()
                continuation.resume(returning: .failure(DedupError(.storeUnavailable, "the Redis store was closed")))
                return
            }
            if !started {
                started = true
                startThread()
            }
            pending.append(Job(commands: commands, continuation: continuation))
            if pending.count == 1 { lock.signal() }
            lock.unlock()
        }
        return try result.get()
    }

    /// Stops the thread after the queued work fails with ``DedupError/Code/storeUnavailable`` and
    /// closes the socket; returns once the thread has finished.
    package func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            closed = true
            if !started || exited {
                lock.unlock()
                continuation.resume()
                return
            }
            exitWaiters.append(continuation)
            lock.signal()
            lock.unlock()
        }
        if !startedThread() {
            // No thread ever ran; an inline caller may still hold the context until it returns.
            lock.lock()
            let idle = !busy
            lock.unlock()
            if idle { disconnectIfIdleAndClosed() }
        }
    }

    /// Asks the thread to stop without waiting (for `deinit`).
    package func closeSoon() {
        lock.lock()
        closed = true
        lock.signal()
        lock.unlock()
    }

    private func startedThread() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return started
    }

    private func disconnectIfIdleAndClosed() {
        lock.lock()
        let mayFree = closed && !busy
        if mayFree { busy = true }
        lock.unlock()
        if mayFree {
            disconnect()
            lock.lock()
            busy = false
            lock.unlock()
        }
    }

    private func startThread() {
        let thread = Thread { [self] in run() }
        thread.name = "dedup.redis.\(index)"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    deinit {
        // The reader goes before the reply buffer it points to (stored properties go after this).
        if let context { redisFree(context) }
    }

    // MARK: The I/O thread

    private func run() {
        var jobs: [Job] = []
        while true {
            lock.lock()
            while (pending.isEmpty || busy) && !closed { lock.wait() }
            if closed {
                while busy { lock.wait() }  // an inline caller finishes its round trip first
                let left = pending
                pending = []
                lock.unlock()
                for job in left {
                    job.continuation.resume(returning: .failure(DedupError(.storeUnavailable, "the Redis store was closed")))
                }
                disconnect()
                lock.lock()
                exited = true
                let waiters = exitWaiters
                exitWaiters = []
                lock.unlock()
                for waiter in waiters { waiter.resume() }
                return
            }
            swap(&jobs, &pending)
            busy = true
            lock.unlock()
            process(jobs)
            jobs.removeAll(keepingCapacity: true)
            lock.lock()
            busy = false
            lock.unlock()
        }
    }

    private func process(_ jobs: [Job]) {
        let context: UnsafeMutablePointer<redisContext>
        do {
            context = try connectedContext()
        } catch {
            for job in jobs { job.continuation.resume(returning: .failure(error)) }
            return
        }
        let results = perform(jobs.map(\.commands), on: context)
        for (job, result) in zip(jobs, results) {
            job.continuation.resume(returning: result)
        }
    }

    /// The inline round trip; `nil` when the connection turns out to be closed by the server (the
    /// caller then queues the work for the I/O thread, which reconnects with backoff).
    private func runInline(_ commands: [RedisCommand]) -> Result<[RedisReply], DedupError>? {
        guard let context, isHealthy(context) else { return nil }
        return performUnit(commands, on: context)
    }

    /// Sends every command of every unit, reads the replies in order, retries `NOSCRIPT`
    /// refusals once after reloading the scripts. After a connection failure the connection is
    /// dropped and units without all their replies fail.
    private func perform(_ units: [[RedisCommand]], on context: UnsafeMutablePointer<redisContext>) -> [Result<[RedisReply], DedupError>] {
        if let error = send(units.joined(), on: context) {
            disconnect()
            return units.map { _ in .failure(error) }
        }
        var results: [[RedisReply]] = []
        results.reserveCapacity(units.count)
        var failure: DedupError?
        var sawNoScript = false
        for unit in units {
            var replies: [RedisReply] = []
            replies.reserveCapacity(unit.count)
            failure = readReplies(unit.count, into: &replies, sawNoScript: &sawNoScript, context)
            if failure != nil { break }
            results.append(replies)
        }
        if let failure {
            disconnect()
            return units.indices.map { $0 < results.count ? .success(results[$0]) : .failure(failure) }
        }
        if sawNoScript, let (error, failed) = retryNoScript(units, &results, context) {
            return results.indices.map { failed.contains($0) ? .failure(error) : .success(results[$0]) }
        }
        return results.map { .success($0) }
    }

    /// ``perform(_:on:)`` for one unit, the inline path's: the same round trip without wrapping
    /// the unit and its replies in arrays of units and results (three allocations a round trip).
    private func performUnit(_ commands: [RedisCommand], on context: UnsafeMutablePointer<redisContext>) -> Result<[RedisReply], DedupError> {
        if let error = send(commands, on: context) {
            disconnect()
            return .failure(error)
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        var sawNoScript = false
        if let failure = readReplies(commands.count, into: &replies, sawNoScript: &sawNoScript, context) {
            disconnect()
            return .failure(failure)
        }
        if sawNoScript {
            var results = [replies]
            if let (error, _) = retryNoScript([commands], &results, context) { return .failure(error) }
            return .success(results[0])
        }
        return .success(replies)
    }

    /// Reads `count` replies into `replies`, noting a `NOSCRIPT` refusal among them; returns the
    /// connection's failure, if it failed first (`replies` then holds those read before it, which
    /// the callers drop with the connection).
    private func readReplies(
        _ count: Int, into replies: inout [RedisReply], sawNoScript: inout Bool, _ context: UnsafeMutablePointer<redisContext>
    ) -> DedupError? {
        for _ in 0..<count {
            switch readReply(context) {
            case .success(let reply):
                if case .error(let text) = reply, text.hasPrefix("NOSCRIPT") { sawNoScript = true }
                replies.append(reply)
            case .failure(let error):
                return error
            }
        }
        return nil
    }

    /// After `SCRIPT FLUSH` (or a server restart between the liveness check and the call), loads
    /// the scripts and sends the refused commands again, in their order; at most once per round so
    /// a server that keeps forgetting scripts cannot make it loop. Returns the error and the units
    /// it fails when the retry itself fails.
    private func retryNoScript(
        _ units: [[RedisCommand]], _ results: inout [[RedisReply]], _ context: UnsafeMutablePointer<redisContext>
    ) -> (DedupError, Set<Int>)? {
        var positions: [(Int, Int)] = []
        for (jobIndex, replies) in results.enumerated() {
            for (commandIndex, reply) in replies.enumerated() {
                if let text = reply.errorText, text.hasPrefix("NOSCRIPT") { positions.append((jobIndex, commandIndex)) }
            }
        }
        settings.logger.debug("Redis forgot the dedup scripts (NOSCRIPT); loading them again", metadata: ["commands": "\(positions.count)"])
        var ok = true
        for script in RedisScript.all {
            ok = ok && RedisCommand("SCRIPT", "LOAD", script.source).append(to: context)
        }
        for (jobIndex, commandIndex) in positions {
            ok = ok && units[jobIndex][commandIndex].append(to: context)
        }
        let failedUnits = Set(positions.map(\.0))
        guard ok else {
            disconnect()
            return (DedupError(.storeError, "cannot buffer a Redis command: out of memory"), failedUnits)
        }
        for script in RedisScript.all {
            switch readReply(context) {
            case .success(let reply):
                if let text = reply.errorText {
                    disconnect()  // the refused commands' replies are still unread
                    return (DedupError.fromServer(text, endpoint: settings.endpoint), failedUnits)
                }
                if reply.stringValue != script.sha {
                    settings.logger.error("Redis named a dedup script differently than expected", metadata: ["script": "\(script.name)"])
                }
            case .failure(let error):
                disconnect()
                return (error, failedUnits)
            }
        }
        for (jobIndex, commandIndex) in positions {
            switch readReply(context) {
            case .success(let reply):
                results[jobIndex][commandIndex] = reply
            case .failure(let error):
                disconnect()
                return (error, failedUnits)
            }
        }
        return nil
    }

    /// Writes a round trip's commands into ``outbound`` and that to the socket: one `send` unless
    /// the socket takes it in parts. (hiredis would copy the commands into an output buffer it
    /// allocates and frees on every round trip.) Returns the failure, if they could not all be sent.
    private func send(_ commands: some Sequence<RedisCommand>, on context: UnsafeMutablePointer<redisContext>) -> DedupError? {
        outbound.removeAll(keepingCapacity: true)
        for command in commands { command.write(to: &outbound) }
        // A buffer grown past what is worth keeping (a batch of thousands of completions) goes
        // once sent, not at the next round trip, which may be long in coming.
        defer { if outbound.capacity > Self.outboundKeptCapacity { outbound = [] } }
        var sent = 0
        while sent < outbound.count {
            let count = outbound.withUnsafeBytes { Glibc.send(context.pointee.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                let sendErrno = errno
                if sendErrno == EINTR { continue }
                return transportError(code: REDIS_ERR_IO, savedErrno: sendErrno, text: String(cString: strerror(sendErrno)), doing: "sending commands")
            }
            sent += count
        }
        return nil
    }

    /// Bytes of commands being sent, kept between round trips (so sending allocates nothing once
    /// it has grown to a round trip's size) up to ``outboundKeptCapacity``.
    private var outbound: [UInt8] = []

    /// The most storage ``outbound`` keeps between round trips: 1 MiB.
    private static let outboundKeptCapacity = 1 << 20

    /// The next reply: what hiredis's `redisGetReply` does, except that bytes read from the socket
    /// reach hiredis's reader at most ``readerSlice`` at a time. The reader moves the rest of its
    /// buffer to the front after every reply once a kilobyte is consumed, so a batch of 100 completed
    /// records (20 KB) fed at once was moved about a megabyte in all; fed in slices, it never holds
    /// much more than one reply.
    private func readReply(_ context: UnsafeMutablePointer<redisContext>) -> Result<RedisReply, DedupError> {
        var raw: UnsafeMutableRawPointer?
        var flushed = false
        while true {
            guard redisReaderGetReply(context.pointee.reader, &raw) == REDIS_OK else {
                // As redisGetReply reports it: what answers is no Redis we can talk to.
                let text = withUnsafeBytes(of: context.pointee.reader.pointee.errstr) { buffer in
                    String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                return .failure(transportError(code: REDIS_ERR_PROTOCOL, savedErrno: 0, text: text, doing: "reading a reply"))
            }
            if raw != nil { return .success(replyBuffer.take()) }
            if !flushed {
                // The commands appended since the last read go out first.
                var done: Int32 = 0
                repeat {
                    guard redisBufferWrite(context, &done) == REDIS_OK else {
                        return .failure(connectionError(context, savedErrno: errno, doing: "sending commands"))
                    }
                } while done == 0
                flushed = true
            }
            if inboundStart == inboundEnd {
                let count = inbound.withUnsafeMutableBytes { read(context.pointee.fd, $0.baseAddress, $0.count) }
                let readErrno = errno
                if count < 0 && readErrno == EINTR { continue }
                guard count > 0 else {
                    let code = count == 0 ? REDIS_ERR_EOF : REDIS_ERR_IO
                    let text = String(cString: strerror(readErrno))
                    return .failure(transportError(code: code, savedErrno: readErrno, text: text, doing: "reading a reply"))
                }
                inboundStart = 0
                inboundEnd = count
            }
            let slice = min(Self.readerSlice, inboundEnd - inboundStart)
            let fed = inbound.withUnsafeBytes { bytes in
                redisReaderFeed(context.pointee.reader, bytes.baseAddress!.assumingMemoryBound(to: CChar.self) + inboundStart, slice)
            }
            guard fed == REDIS_OK else {
                return .failure(transportError(code: REDIS_ERR_OOM, savedErrno: 0, text: "out of memory", doing: "reading a reply"))
            }
            inboundStart += slice
        }
    }

    /// How many bytes the reader gets at a time (its buffer is compacted once a kilobyte is read).
    private static let readerSlice = 1024

    /// Bytes read from the socket and not yet given to hiredis's reader; emptied with the
    /// connection (they belong to it).
    private var inbound = [UInt8](repeating: 0, count: 65_536)
    private var inboundStart = 0
    private var inboundEnd = 0

    private func connectionError(_ context: UnsafeMutablePointer<redisContext>, savedErrno: Int32, doing: String) -> DedupError {
        let text = withUnsafeBytes(of: context.pointee.errstr) { buffer in
            String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return transportError(code: context.pointee.err, savedErrno: savedErrno, text: text, doing: doing)
    }

    /// A hiredis error code (`REDIS_ERR_IO`, `REDIS_ERR_EOF`, …) with the `errno` and text that came
    /// with it, as the caller's error: a timeout, a closed connection, or the store unavailable.
    private func transportError(code: Int32, savedErrno: Int32, text: String, doing: String) -> DedupError {
        let where_ = settings.endpoint.redactedDescription
        if code == REDIS_ERR_IO && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || savedErrno == ETIMEDOUT || savedErrno == EINPROGRESS) {
            return DedupError(.timeout, "Redis at \(where_) did not answer within \(settings.commandTimeout) (\(doing))")
        }
        if code == REDIS_ERR_EOF {
            return DedupError(.storeUnavailable, "Redis at \(where_) closed the connection (\(doing))")
        }
        return DedupError(.storeUnavailable, "Redis at \(where_): \(text.isEmpty ? "connection failed" : text) (\(doing))")
    }

    // MARK: Connecting

    private func disconnect() {
        if let context {
            redisFree(context)
            self.context = nil
        }
        inboundStart = 0
        inboundEnd = 0
    }

    /// The live connection: reuses the current one unless the server has closed it (checked with a
    /// zero-timeout poll: an idle connection has nothing to read, so readable means EOF or reset);
    /// otherwise connects, retrying refused or timed-out attempts with backoff.
    private func connectedContext() throws(DedupError) -> UnsafeMutablePointer<redisContext> {
        if let context {
            if isHealthy(context) { return context }
            settings.logger.debug("Redis connection was closed by the server; reconnecting", metadata: ["endpoint": "\(settings.endpoint)"])
            disconnect()
        }
        let policy = settings.reconnect
        var backoff = policy.initialBackoff
        var lastError = DedupError(.storeUnavailable, "cannot connect to Redis at \(settings.endpoint.redactedDescription)")
        for attempt in 1...max(1, policy.maximumAttempts) {
            if attempt > 1 {
                Thread.sleep(forTimeInterval: Self.seconds(backoff))
                backoff = min(backoff * 2, policy.maximumBackoff)
                lock.lock()
                let isClosed = closed
                lock.unlock()
                if isClosed { throw DedupError(.storeUnavailable, "the Redis store was closed") }
            }
            do {
                let context = try connectOnce()
                if attempt > 1 {
                    settings.logger.info("Reconnected to Redis", metadata: ["endpoint": "\(settings.endpoint)", "attempt": "\(attempt)"])
                }
                self.context = context
                return context
            } catch where error.code == .storeUnavailable || error.code == .timeout {
                lastError = error
                settings.logger.debug("Cannot connect to Redis", metadata: ["endpoint": "\(settings.endpoint)", "attempt": "\(attempt)", "error": "\(error)"])
            }
        }
        throw lastError
    }

    /// An idle connection has nothing to read, neither in the socket nor left over from the last
    /// reply: readable means the server closed it (EOF) or reset it. One zero-timeout `poll`, about
    /// a microsecond.
    private func isHealthy(_ context: UnsafeMutablePointer<redisContext>) -> Bool {
        var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
        return context.pointee.err == 0 && inboundStart == inboundEnd && poll(&descriptor, 1, 0) == 0
    }

    private func connectOnce() throws(DedupError) -> UnsafeMutablePointer<redisContext> {
        // Whatever an earlier connection left unread is not this one's.
        inboundStart = 0
        inboundEnd = 0
        let endpoint = settings.endpoint
        let timeout = Self.timeval(settings.connectTimeout)
        let maybeContext: UnsafeMutablePointer<redisContext>?
        switch endpoint.transport {
        case .tcp(let host, let port):
            maybeContext = redisConnectWithTimeout(host, Int32(port), timeout)
        case .unixSocket(let path):
            maybeContext = redisConnectUnixWithTimeout(path, timeout)
        }
        let savedErrno = errno
        guard let context = maybeContext else {
            throw DedupError(.storeUnavailable, "cannot connect to Redis at \(endpoint.redactedDescription): out of memory")
        }
        if let reader = context.pointee.reader { replyBuffer.attach(to: reader) }
        if context.pointee.err != 0 {
            let text = withUnsafeBytes(of: context.pointee.errstr) { buffer in
                String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            redisFree(context)
            if savedErrno == ETIMEDOUT || savedErrno == EINPROGRESS || savedErrno == EAGAIN || text.contains("timed out") {
                throw DedupError(.timeout, "cannot connect to Redis at \(endpoint.redactedDescription) within \(settings.connectTimeout): \(text)")
            }
            throw DedupError(.storeUnavailable, "cannot connect to Redis at \(endpoint.redactedDescription): \(text)")
        }
        guard redisSetTimeout(context, Self.timeval(settings.commandTimeout)) == REDIS_OK else {
            redisFree(context)
            throw DedupError(.storeUnavailable, "cannot set the command timeout on the Redis connection to \(endpoint.redactedDescription)")
        }

        // Log in, select the database and load the scripts in one round trip.
        var commands: [RedisCommand] = []
        if let password = endpoint.password {
            var auth = RedisCommand("AUTH")
            if let username = endpoint.username { auth.append(username) }
            auth.append(password)
            commands.append(auth)
        }
        if endpoint.database != 0 {
            commands.append(RedisCommand("SELECT", String(endpoint.database)))
        }
        for script in RedisScript.all {
            commands.append(RedisCommand("SCRIPT", "LOAD", script.source))
        }
        for command in commands where !command.append(to: context) {
            redisFree(context)
            throw DedupError(.storeError, "cannot buffer a Redis command: out of memory")
        }
        var firstError: DedupError?
        for command in commands {
            switch readReply(context) {
            case .success(let reply):
                if let text = reply.errorText, firstError == nil {
                    var error = DedupError.fromServer(text, endpoint: endpoint)
                    if command.name == "SELECT" {
                        error = DedupError(.invalidConfiguration, "Redis at \(endpoint.redactedDescription) refused database \(endpoint.database): \(text)")
                    } else if command.name == "AUTH", error.code == .storeError {
                        error = DedupError(.authenticationFailed, "Redis at \(endpoint.redactedDescription) refused the login: \(text)")
                    }
                    firstError = error
                }
            case .failure(let error):
                redisFree(context)
                throw error
            }
        }
        if let firstError {
            redisFree(context)
            throw firstError
        }
        return context
    }

    static func timeval(_ duration: Duration) -> timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

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

