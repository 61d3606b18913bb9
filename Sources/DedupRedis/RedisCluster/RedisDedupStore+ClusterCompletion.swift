import Dedup

// A batch's completions on a cluster: one call of the completion script per primary, its keys in
// any of that primary's slots (see `RedisScript.completeAcrossSlots`), rather than one per slot,
// which for a batch of 100 keys spread over 16,384 slots is one per key.
extension RedisDedupStore {
    /// Completes `completions` with one call of ``RedisScript/completeAcrossSlots`` per primary
    /// (per ``maximumKeysPerCompletion`` keys of one retention), the calls pipelined per primary
    /// and sent concurrently; returns each completion's answer from the script, in order. A key
    /// its node no longer serves (a slot moved or migrating) is completed again by its slot, where
    /// the router follows `MOVED` and `ASK`. `nil` when the batch goes by slot instead: a slot
    /// without a primary (the router fails that typed), or servers refusing the script (before
    /// Redis 7.0, or a proxy), which makes every later batch go by slot too.
    func completeAcrossSlots(_ completions: [Completion]) async throws(DedupError) -> [RedisReply]? {
        let slots = completions.map { ClusterSlot.slot(of: key(for: $0.lease.id)) }
        let nodes = cluster.primaryIndexes(ofSlots: slots)
        if nodes.contains(where: { $0 == nil }) { return nil }
        // Grouped by primary, in the batch's order within each (a key's completions stay in order).
        let order = completions.indices.sorted { (nodes[$0]!, $0) < (nodes[$1]!, $1) }
        let grouped = order.map { completions[$0] }
        var calls: [Range<Int>] = []
        var start = 0
        while start < grouped.count {
            var end = start + 1
            while end < grouped.count, end - start < Self.maximumKeysPerCompletion,
                nodes[order[end]] == nodes[order[start]], grouped[end].retention == grouped[start].retention
            {
                end += 1
            }
            calls.append(start..<end)
            start = end
        }
        var pieces = sharedPieces
        var commands = grouped.withUnsafeBufferPointer { grouped in
            calls.map { completeCommand(UnsafeBufferPointer(rebasing: grouped[$0]), &pieces, acrossSlots: true) }
        }
        keep(pieces)
        var replies = try await execute(commands)

        // The connection already reloads scripts after `NOSCRIPT` (this one included) and sends the
        // call again; a `NOSCRIPT` that still reaches here means the node refused to load it. Loading
        // it once more, in the same pipeline as the call, brings back the refusal's own text, which
        // `noteRefusedScriptFlags` needs to send this store's later batches by slot.
        let unloaded = calls.indices.filter { replies[$0].errorText?.hasPrefix("NOSCRIPT") == true }
        if !unloaded.isEmpty {
            var unit: [RedisCommand] = []
            for index in unloaded {
                var load = RedisCommand("SCRIPT", "LOAD", RedisScript.completeAcrossSlots.source)
                load.routingSlot = commands[index].routingSlot
                unit += [load, commands[index]]
            }
            let answers = try await execute(unit)
            for (position, index) in unloaded.enumerated() {
                let loaded = answers[2 * position]
                replies[index] = loaded.errorText == nil ? answers[2 * position + 1] : loaded
            }
        }
        commands = []

        var keyReplies = [RedisReply](repeating: .null, count: completions.count)
        var again: [Int] = []
        for (call, reply) in zip(calls, replies) {
            guard let flags = reply.arrayValue, flags.count == call.count else {
                // The whole call refused: the script (no script flags before Redis 7.0, a proxy's
                // rules), or anything else; its keys go by slot, where an error is the server's.
                noteRefusedScriptFlags(reply)
                again += call.map { order[$0] }
                continue
            }
            for (position, flag) in zip(call, flags) {
                if let text = flag.errorText, text.hasPrefix(Self.nonLocalKeyError) {
                    again.append(order[position])
                } else {
                    keyReplies[order[position]] = flag
                }
            }
        }
        if !again.isEmpty {
            again.sort()
            let byKey = try await completeBySlot(again.map { completions[$0] })
            for (index, reply) in zip(again, byKey) { keyReplies[index] = reply }
        }
        return keyReplies
    }

    /// What a cluster node answers for a key of a script it does not serve (Redis 7).
    private static let nonLocalKeyError = "ERR Script attempted"

    /// Completes with calls of keys of one slot (the completion script as a single server takes
    /// it), routed by the router; each completion's answer, in order.
    private func completeBySlot(_ completions: [Completion]) async throws(DedupError) -> [RedisReply] {
        let calls = completionCalls(completions, keysPerCall: Self.maximumKeysPerCompletion)
        let replies = try await executeCompletions(completions, calls)
        var keyReplies: [RedisReply] = []
        keyReplies.reserveCapacity(completions.count)
        for (call, reply) in zip(calls, replies) {
            if let flags = reply.arrayValue, flags.count == call.count {
                keyReplies += flags
            } else {
                keyReplies += call.map { _ in reply }
            }
        }
        return keyReplies
    }

    /// A call of the script refused as a whole: by a server that cannot run it (a compile error
    /// at the shebang, an unknown flag, a proxy's refusal), this store completes by slot from now
    /// on. Any other error (`CLUSTERDOWN`, `OOM`, …) is that call's alone.
    private func noteRefusedScriptFlags(_ reply: RedisReply) {
        guard let text = reply.errorText,
            text.contains("shebang") || text.contains("compiling script") || text.hasPrefix("CROSSSLOT")
                || text.contains("flag")
        else { return }
        if !refusesScriptFlags.exchange(true, ordering: .relaxed) {
            logger.warning(
                "Redis refused the completion script across hash slots; completing a batch's keys by slot from now on",
                metadata: ["error": "\(text)"]
            )
        }
    }

    /// The batch's answers from each completion's answer of the script.
    func decodeCompletionAnswers(_ keyReplies: [RedisReply]) throws -> [CompletionAnswer] {
        var answers: [CompletionAnswer] = []
        answers.reserveCapacity(keyReplies.count)
        try decodeCompletions(.array(keyReplies), count: keyReplies.count, into: &answers)
        return answers
    }
}
