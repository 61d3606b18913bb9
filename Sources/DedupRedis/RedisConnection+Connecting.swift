import CHiredis
import Dedup
import Foundation

// Connecting: reusing a healthy connection, reconnecting with backoff, logging in.
extension RedisConnection {
    func disconnect() {
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
    func connectedContext() throws(DedupError) -> UnsafeMutablePointer<redisContext> {
        if let context {
            if isHealthy(context) { return context }
            settings.logger.debug(
                "Redis connection was closed by the server; reconnecting",
                metadata: ["endpoint": "\(settings.endpoint)"]
            )
            disconnect()
        }
        let policy = settings.reconnect
        var backoff = policy.initialBackoff
        var lastError = DedupError(
            .storeUnavailable,
            "cannot connect to Redis at \(settings.endpoint.redactedDescription)"
        )
        for attempt in 1...max(1, policy.maximumAttempts) {
            if attempt > 1 {
                guard waitBeforeReconnecting(for: backoff) else {
                    throw DedupError(.storeUnavailable, "the Redis store was closed")
                }
                backoff = min(backoff * 2, policy.maximumBackoff)
            }
            connectAttempts.add(1, ordering: .relaxed)
            do {
                let context = try connectOnce()
                if attempt > 1 {
                    settings.logger.info(
                        "Reconnected to Redis",
                        metadata: ["endpoint": "\(settings.endpoint)", "attempt": "\(attempt)"]
                    )
                }
                self.context = context
                return context
            } catch  where error.code == .storeUnavailable || error.code == .timeout {
                lastError = error
                settings.logger.debug(
                    "Cannot connect to Redis",
                    metadata: ["endpoint": "\(settings.endpoint)", "attempt": "\(attempt)", "error": "\(error)"]
                )
            }
        }
        throw lastError
    }

    /// An idle connection has nothing to read, neither in the socket nor left over from the last
    /// reply: readable means the server closed it (EOF) or reset it. One zero-timeout `poll`, about
    /// a microsecond.
    func isHealthy(_ context: UnsafeMutablePointer<redisContext>) -> Bool {
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
            throw DedupError(
                .storeUnavailable,
                "cannot connect to Redis at \(endpoint.redactedDescription): out of memory"
            )
        }
        if let reader = context.pointee.reader { replyBuffer.attach(to: reader) }
        if context.pointee.err != 0 {
            let text = withUnsafeBytes(of: context.pointee.errstr) { buffer in
                String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            // hiredis reports a failed system call as REDIS_ERR_IO, with its errno.
            let systemError = context.pointee.err == REDIS_ERR_IO ? POSIXError.number(savedErrno) : nil
            redisFree(context)
            if savedErrno == ETIMEDOUT || savedErrno == EINPROGRESS || savedErrno == EAGAIN
                || text.contains("timed out")
            {
                throw DedupError(
                    .timeout,
                    "cannot connect to Redis at \(endpoint.redactedDescription) within \(settings.connectTimeout): \(text)",
                    underlyingError: systemError
                )
            }
            throw DedupError(
                .storeUnavailable,
                "cannot connect to Redis at \(endpoint.redactedDescription): \(text)",
                underlyingError: systemError
            )
        }
        guard redisSetTimeout(context, Self.timeval(settings.commandTimeout)) == REDIS_OK else {
            redisFree(context)
            throw DedupError(
                .storeUnavailable,
                "cannot set the command timeout on the Redis connection to \(endpoint.redactedDescription)"
            )
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
                        error = DedupError(
                            .invalidConfiguration,
                            "Redis at \(endpoint.redactedDescription) refused database \(endpoint.database): \(text)",
                            redisErrorText: text
                        )
                    } else if command.name == "AUTH", error.code == .storeError {
                        error = DedupError(
                            .authenticationFailed,
                            "Redis at \(endpoint.redactedDescription) refused the login: \(text)",
                            redisErrorText: text
                        )
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

    /// A duration in nanoseconds of `CLOCK_MONOTONIC`, the lock's clock (0 when negative).
    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
