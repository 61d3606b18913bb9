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
struct ConnectionSettings: Sendable {
    var endpoint: RedisEndpoint
    var connectTimeout: Duration
    var commandTimeout: Duration
    var reconnect: RedisDedupStore.ReconnectPolicy
    var logger: Logger
}

/// One hiredis connection and the thread that owns it.
///
/// Callers enqueue a batch of commands and suspend; the thread takes everything queued, appends it
/// all to the connection's output buffer, flushes it with one write, reads the replies in order and
/// resumes the callers. Concurrent callers therefore share round trips (automatic pipelining), and
/// a blocking network wait parks this thread, never one of Swift's cooperative threads.
final class RedisConnection: @unchecked Sendable {
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

    // Owned by the I/O thread.
    private var context: UnsafeMutablePointer<redisContext>?

    init(settings: ConnectionSettings, index: Int) {
        self.settings = settings
        self.index = index
    }

    /// Sends commands as one pipelined unit and returns their replies in order. Error replies are
    /// returned as ``RedisReply/error(_:)``; a failure of the connection itself is thrown.
    func execute(_ commands: [RedisCommand]) async throws(DedupError) -> [RedisReply] {
        load.add(1, ordering: .relaxed)
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
        load.subtract(1, ordering: .relaxed)
        return try result.get()
    }

    /// Stops the thread after the queued work fails with ``DedupError/Code/storeUnavailable`` and
    /// closes the socket; returns once the thread has finished.
    func close() async {
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
    }

    /// Asks the thread to stop without waiting (for `deinit`).
    func closeSoon() {
        lock.lock()
        closed = true
        lock.signal()
        lock.unlock()
    }

    private func startThread() {
        let thread = Thread { [self] in run() }
        thread.name = "dedup.redis.\(index)"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    // MARK: The I/O thread

    private func run() {
        var jobs: [Job] = []
        while true {
            lock.lock()
            while pending.isEmpty && !closed { lock.wait() }
            if closed {
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
            lock.unlock()
            process(jobs)
            jobs.removeAll(keepingCapacity: true)
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
        var commandCount = 0
        for job in jobs {
            for command in job.commands {
                commandCount += 1
                if !command.append(to: context) {
                    let error = DedupError(.storeError, "cannot buffer a Redis command: out of memory")
                    disconnect()
                    for job in jobs { job.continuation.resume(returning: .failure(error)) }
                    return
                }
            }
        }

        var results: [[RedisReply]] = []
        results.reserveCapacity(jobs.count)
        var failure: DedupError?
        var sawNoScript = false
        for job in jobs {
            var replies: [RedisReply] = []
            replies.reserveCapacity(job.commands.count)
            for _ in job.commands where failure == nil {
                switch readReply(context) {
                case .success(let reply):
                    if let text = reply.errorText, text.hasPrefix("NOSCRIPT") { sawNoScript = true }
                    replies.append(reply)
                case .failure(let error):
                    failure = error
                }
            }
            if failure != nil { break }
            results.append(replies)
        }
        if let failure {
            disconnect()
            for (position, job) in jobs.enumerated() {
                if position < results.count {
                    job.continuation.resume(returning: .success(results[position]))
                } else {
                    job.continuation.resume(returning: .failure(failure))
                }
            }
            return
        }
        if sawNoScript {
            retryNoScript(jobs, &results, context)
        }
        for (position, job) in jobs.enumerated() {
            job.continuation.resume(returning: .success(results[position]))
        }
    }

    /// After `SCRIPT FLUSH` (or a server restart between the liveness check and the call), loads
    /// the scripts and sends the refused commands again, in their order; at most once per round so
    /// a server that keeps forgetting scripts cannot make it loop.
    private func retryNoScript(_ jobs: [Job], _ results: inout [[RedisReply]], _ context: UnsafeMutablePointer<redisContext>) {
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
            ok = ok && jobs[jobIndex].commands[commandIndex].append(to: context)
        }
        guard ok else {
            disconnect()
            return
        }
        for script in RedisScript.all {
            switch readReply(context) {
            case .success(let reply):
                if let text = reply.errorText {
                    markFailed(positions, &results, DedupError.fromServer(text, endpoint: settings.endpoint))
                    drain(context, count: positions.count + RedisScript.all.count)
                    return
                }
                if reply.stringValue != script.sha {
                    settings.logger.error("Redis named a dedup script differently than expected", metadata: ["script": "\(script.name)"])
                }
            case .failure(let error):
                disconnect()
                markFailed(positions, &results, error)
                return
            }
        }
        for (jobIndex, commandIndex) in positions {
            switch readReply(context) {
            case .success(let reply):
                results[jobIndex][commandIndex] = reply
            case .failure(let error):
                disconnect()
                markFailed(positions, &results, error)
                return
            }
        }
    }

    private func markFailed(_ positions: [(Int, Int)], _ results: inout [[RedisReply]], _ error: DedupError) {
        for (jobIndex, commandIndex) in positions {
            results[jobIndex][commandIndex] = .error("\(error.code): \(error.message)")
        }
    }

    /// Gives up on a connection whose remaining replies nobody will read.
    private func drain(_ context: UnsafeMutablePointer<redisContext>, count: Int) {
        disconnect()
    }

    private func readReply(_ context: UnsafeMutablePointer<redisContext>) -> Result<RedisReply, DedupError> {
        var raw: UnsafeMutableRawPointer?
        let status = redisGetReply(context, &raw)
        let savedErrno = errno
        guard status == REDIS_OK, let raw else {
            return .failure(connectionError(context, savedErrno: savedErrno, doing: "reading a reply"))
        }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        let value = RedisReply(reply)
        freeReplyObject(raw)
        return .success(value)
    }

    private func connectionError(_ context: UnsafeMutablePointer<redisContext>, savedErrno: Int32, doing: String) -> DedupError {
        let where_ = settings.endpoint.redactedDescription
        let text = withUnsafeBytes(of: context.pointee.errstr) { buffer in
            String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let code = context.pointee.err
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
    }

    /// The live connection: reuses the current one unless the server has closed it (checked with a
    /// zero-timeout poll: an idle connection has nothing to read, so readable means EOF or reset);
    /// otherwise connects, retrying refused or timed-out attempts with backoff.
    private func connectedContext() throws(DedupError) -> UnsafeMutablePointer<redisContext> {
        if let context {
            var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
            if context.pointee.err == 0 && poll(&descriptor, 1, 0) == 0 {
                return context
            }
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

    private func connectOnce() throws(DedupError) -> UnsafeMutablePointer<redisContext> {
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
    static func fromServer(_ text: String, endpoint: RedisEndpoint) -> DedupError {
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
