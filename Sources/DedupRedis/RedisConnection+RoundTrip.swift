import CHiredis
import Dedup
import Foundation

// The round trip: sending a unit of commands, reading its replies through hiredis's reader, and
// reloading the scripts after `NOSCRIPT`.
extension RedisConnection {
    /// The inline round trip; `nil` when the connection turns out to be closed by the server (the
    /// caller then queues the work for the I/O thread, which reconnects with backoff).
    func runInline(_ commands: [RedisCommand]) -> Result<[RedisReply], DedupError>? {
        guard let context, isHealthy(context) else { return nil }
        return performUnit(commands, on: context)
    }

    /// Sends every command of every unit, reads the replies in order, retries `NOSCRIPT`
    /// refusals once after reloading the scripts. After a connection failure the connection is
    /// dropped and units without all their replies fail.
    func perform(
        _ units: [[RedisCommand]],
        on context: UnsafeMutablePointer<redisContext>
    ) -> [Result<[RedisReply], DedupError>] {
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
    private func performUnit(
        _ commands: [RedisCommand],
        on context: UnsafeMutablePointer<redisContext>
    ) -> Result<[RedisReply], DedupError> {
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
        _ count: Int,
        into replies: inout [RedisReply],
        sawNoScript: inout Bool,
        _ context: UnsafeMutablePointer<redisContext>
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
        _ units: [[RedisCommand]],
        _ results: inout [[RedisReply]],
        _ context: UnsafeMutablePointer<redisContext>
    ) -> (DedupError, Set<Int>)? {
        var positions: [(Int, Int)] = []
        for (jobIndex, replies) in results.enumerated() {
            for (commandIndex, reply) in replies.enumerated() {
                if let text = reply.errorText, text.hasPrefix("NOSCRIPT") { positions.append((jobIndex, commandIndex)) }
            }
        }
        settings.logger.debug(
            "Redis forgot the dedup scripts (NOSCRIPT); loading them again",
            metadata: ["commands": "\(positions.count)"]
        )
        var ok = true
        for script in RedisScript.all {
            ok = ok && RedisCommand("SCRIPT", "LOAD", script.source).append(to: context)
        }
        // The completion across slots, when it was refused: not one of the scripts every server
        // takes (a server before Redis 7.0 refuses its flags), so a refusal to load it is left to
        // the call sent again, whose `NOSCRIPT` the store answers by completing by slot.
        let acrossSlots = positions.contains { units[$0.0][$0.1].body.starts(with: Self.acrossSlotsCallPrefix) }
        if acrossSlots {
            ok = ok && RedisCommand("SCRIPT", "LOAD", RedisScript.completeAcrossSlots.source).append(to: context)
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
                    settings.logger.error(
                        "Redis named a dedup script differently than expected",
                        metadata: ["script": "\(script.name)"]
                    )
                }
            case .failure(let error):
                disconnect()
                return (error, failedUnits)
            }
        }
        if acrossSlots, case .failure(let error) = readReply(context) {
            disconnect()
            return (error, failedUnits)
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

    /// `EVALSHA <complete across slots sha>`, encoded: how a call of that script starts.
    private static let acrossSlotsCallPrefix = RedisCommand("EVALSHA", RedisScript.completeAcrossSlots.sha).body

    /// Writes a round trip's commands into ``outbound`` and that to the socket: one `send` unless
    /// the socket takes it in parts. (hiredis would copy the commands into an output buffer it
    /// allocates and frees on every round trip.) Returns the failure, if they could not all be sent.
    private func send(
        _ commands: some Sequence<RedisCommand>,
        on context: UnsafeMutablePointer<redisContext>
    ) -> DedupError? {
        outbound.removeAll(keepingCapacity: true)
        for command in commands { command.write(to: &outbound) }
        // A buffer grown past what is worth keeping (a batch of thousands of completions) goes
        // once sent, not at the next round trip, which may be long in coming.
        defer { if outbound.capacity > Self.outboundKeptCapacity { outbound = [] } }
        var sent = 0
        while sent < outbound.count {
            let count = outbound.withUnsafeBytes {
                Glibc.send(context.pointee.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL))
            }
            if count < 0 {
                let sendErrno = errno
                if sendErrno == EINTR { continue }
                return transportError(
                    code: REDIS_ERR_IO,
                    savedErrno: sendErrno,
                    text: String(cString: strerror(sendErrno)),
                    doing: "sending commands"
                )
            }
            sent += count
        }
        return nil
    }

    /// The most storage ``outbound`` keeps between round trips: 1 MiB.
    private static let outboundKeptCapacity = 1 << 20

    /// The next reply: what hiredis's `redisGetReply` does, except that bytes read from the socket
    /// reach hiredis's reader at most ``readerSlice`` at a time. The reader moves the rest of its
    /// buffer to the front after every reply once a kilobyte is consumed, so a batch of 100 completed
    /// records (20 KB) fed at once was moved about a megabyte in all; fed in slices, it never holds
    /// much more than one reply.
    func readReply(_ context: UnsafeMutablePointer<redisContext>) -> Result<RedisReply, DedupError> {
        var raw: UnsafeMutableRawPointer?
        var flushed = false
        while true {
            guard redisReaderGetReply(context.pointee.reader, &raw) == REDIS_OK else {
                // As redisGetReply reports it: what answers is no Redis we can talk to.
                let text = withUnsafeBytes(of: context.pointee.reader.pointee.errstr) { buffer in
                    String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                return .failure(
                    transportError(code: REDIS_ERR_PROTOCOL, savedErrno: 0, text: text, doing: "reading a reply")
                )
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
                    return .failure(
                        transportError(code: code, savedErrno: readErrno, text: text, doing: "reading a reply")
                    )
                }
                inboundStart = 0
                inboundEnd = count
            }
            let slice = min(Self.readerSlice, inboundEnd - inboundStart)
            let fed = inbound.withUnsafeBytes { bytes in
                redisReaderFeed(
                    context.pointee.reader,
                    bytes.baseAddress!.assumingMemoryBound(to: CChar.self) + inboundStart,
                    slice
                )
            }
            guard fed == REDIS_OK else {
                return .failure(
                    transportError(code: REDIS_ERR_OOM, savedErrno: 0, text: "out of memory", doing: "reading a reply")
                )
            }
            inboundStart += slice
        }
    }

    /// How many bytes the reader gets at a time (its buffer is compacted once a kilobyte is read).
    private static let readerSlice = 1024

    private func connectionError(
        _ context: UnsafeMutablePointer<redisContext>,
        savedErrno: Int32,
        doing: String
    ) -> DedupError {
        let text = withUnsafeBytes(of: context.pointee.errstr) { buffer in
            String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return transportError(code: context.pointee.err, savedErrno: savedErrno, text: text, doing: doing)
    }

    /// A hiredis error code (`REDIS_ERR_IO`, `REDIS_ERR_EOF`, …) with the `errno` and text that came
    /// with it, as the caller's error: a timeout, a closed connection, or the store unavailable.
    private func transportError(code: Int32, savedErrno: Int32, text: String, doing: String) -> DedupError {
        let where_ = settings.endpoint.redactedDescription
        let systemError = code == REDIS_ERR_IO ? POSIXError.number(savedErrno) : nil
        if code == REDIS_ERR_IO
            && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || savedErrno == ETIMEDOUT
                || savedErrno == EINPROGRESS)
        {
            return DedupError(
                .timeout,
                "Redis at \(where_) did not answer within \(settings.commandTimeout) (\(doing))",
                underlyingError: systemError
            )
        }
        if code == REDIS_ERR_EOF {
            return DedupError(.storeUnavailable, "Redis at \(where_) closed the connection (\(doing))")
        }
        return DedupError(
            .storeUnavailable,
            "Redis at \(where_): \(text.isEmpty ? "connection failed" : text) (\(doing))",
            underlyingError: systemError
        )
    }
}
