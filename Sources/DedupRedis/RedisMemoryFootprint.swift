import Dedup
import Foundation

/// What a completed record costs in a Redis server's memory, beside what the same number of bare
/// keys of the same names and expiry cost on the same server, measured in one run.
///
/// The records go through the store's own claim and completion (pipelined batches, as a consumer's
/// batches do) into the endpoint's database; the bare keys into the two databases after it: `SET
/// <key> c PX <retention>` (a one-byte value) and `SET <key> 1 PX <retention>` (a small integer,
/// which Redis shares among keys rather than storing, so it is the least any key can cost). Each
/// fill is read as the growth of `INFO memory`'s `used_memory` and removed afterwards. The three
/// databases must be empty: each fill then also pays for its own hash tables, as a store does.
package struct RedisMemoryFootprint: Sendable, CustomStringConvertible {
    /// How many records (and bare keys of each kind) were written.
    package var count: Int
    /// `used_memory` growth per completed record.
    package var recordBytes: Double
    /// `used_memory` growth per bare key holding a one-byte value.
    package var bareKeyBytes: Double
    /// `used_memory` growth per bare key holding `1`, a shared integer.
    package var sharedIntegerKeyBytes: Double
    /// One record's key and value as stored, for the report.
    package var sampleKey: [UInt8]
    package var sampleValue: [UInt8]

    /// ``recordBytes`` over ``bareKeyBytes``.
    package var ratio: Double { recordBytes / bareKeyBytes }

    package var description: String {
        func bytes(_ value: Double) -> String { String(format: "%.1f", value) }
        return """
            \(count) completed records: \(bytes(recordBytes)) bytes of used_memory each; bare keys of the same names and \
            expiry: \(bytes(bareKeyBytes)) with a one-byte value, \(bytes(sharedIntegerKeyBytes)) with the shared integer 1; \
            ratio \(String(format: "%.2f", ratio)) (a record against a one-byte value); a value: \
            \(String(decoding: sampleValue, as: UTF8.self).debugDescription) (\(sampleValue.count) bytes) at \
            \(String(decoding: sampleKey, as: UTF8.self).debugDescription)
            """
    }

    /// Fills `count` records and as many bare keys of each kind, measures them and removes them.
    ///
    /// - Parameters:
    ///   - endpoint: The server, and the first of the three empty databases used.
    ///   - count: Records to write.
    ///   - namespace: The records' namespace; their keys are `order-1`, `order-2`, …, as the demo's
    ///     are. `demo-<Unix ms>`, as the demo names its runs, when `nil`.
    ///   - lease: The claims' lease.
    ///   - retention: The records' retention, and the bare keys' expiry.
    ///   - brokerTimes: Whether the claims carry a broker time (the message's, a moment before
    ///     the claim), as a stream consumer's do.
    ///   - batchSize: Claims and completions per round trip.
    /// - Throws: ``DedupError/Code/invalidConfiguration`` when a database is not empty or `count`
    ///   is not positive; the store's errors.
    package static func measure(
        endpoint: RedisEndpoint,
        count: Int,
        namespace: String? = nil,
        lease: Duration = .seconds(30),
        retention: Duration = .seconds(86_400),
        brokerTimes: Bool = true,
        batchSize: Int = 100
    ) async throws -> RedisMemoryFootprint {
        guard count > 0, batchSize > 0 else {
            throw DedupError(.invalidConfiguration, "the memory footprint needs a positive count and batch size")
        }
        let namespace = namespace ?? "demo-\(Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))"
        let ids = try (1...count).map { try RecordID(namespace: namespace, key: "order-\($0)") }
        let configuration = RedisDedupStore.Configuration(poolSize: 1)
        var databases: [RedisDedupStore] = []
        for offset in 0..<3 {
            var database = endpoint
            database.database += offset
            databases.append(try RedisDedupStore(endpoint: database, configuration: configuration))
        }
        do {
            let footprint = try await measure(
                databases,
                ids: ids,
                lease: lease,
                retention: retention,
                brokerTimes: brokerTimes,
                batchSize: batchSize
            )
            for store in databases { await store.close() }
            return footprint
        } catch {
            for store in databases { await store.close() }
            throw error
        }
    }

    private static func measure(
        _ databases: [RedisDedupStore],
        ids: [RecordID],
        lease: Duration,
        retention: Duration,
        brokerTimes: Bool,
        batchSize: Int
    ) async throws -> RedisMemoryFootprint {
        let count = ids.count
        for store in databases {
            let size = try await store.execute([RedisCommand("DBSIZE")])[0].integerValue
            guard size == 0 else {
                throw DedupError(
                    .invalidConfiguration,
                    "measuring the memory footprint needs three empty databases from \(store.endpoint.redactedDescription) on; it holds \(size.map(String.init) ?? "?") keys"
                )
            }
        }
        let store = databases[0]
        let keys = ids.map(store.key(for:))

        let before = try await usedMemory(store)
        for start in stride(from: 0, to: count, by: batchSize) {
            let requests = ids[start..<min(start + batchSize, count)].map { id in
                ClaimRequest(
                    id: id,
                    lease: lease,
                    retention: retention,
                    brokerTime: brokerTimes ? Date(timeIntervalSinceNow: -0.005) : nil
                )
            }
            let leases = try await store.claim(batch: requests).map { answer -> Lease in
                guard case .acquired(let lease) = answer else {
                    throw DedupError(
                        .storeError,
                        "measuring the memory footprint: a claim found \(answer) rather than nothing"
                    )
                }
                return lease
            }
            let answers = try await store.complete(batch: leases.map { Completion(lease: $0, retention: retention) })
            guard answers.allSatisfy({ $0 == .completed }) else {
                throw DedupError(.storeError, "measuring the memory footprint: a completion lost its lease")
            }
        }
        let recordBytes = Double(try await usedMemory(store) - before) / Double(count)
        let sample = try await store.execute([RedisCommand("GET") + keys[0]])[0].bytesValue ?? []

        var bareBytes: [Double] = []
        for (store, value) in [(databases[1], "c"), (databases[2], "1")] {
            let before = try await usedMemory(store)
            try await run(keys, on: store) { key in
                var command = RedisCommand("SET") + key
                command.append(value)
                command.append("PX")
                command.append(retention.wholeMilliseconds)
                return command
            }
            bareBytes.append(Double(try await usedMemory(store) - before) / Double(count))
        }
        for store in databases {
            try await run(keys, on: store) { RedisCommand("UNLINK") + $0 }
        }
        return RedisMemoryFootprint(
            count: count,
            recordBytes: recordBytes,
            bareKeyBytes: bareBytes[0],
            sharedIntegerKeyBytes: bareBytes[1],
            sampleKey: keys[0],
            sampleValue: sample
        )
    }

    /// `used_memory` from `INFO memory`.
    private static func usedMemory(_ store: RedisDedupStore) async throws -> Int {
        let reply = try await store.execute([RedisCommand("INFO", "memory")])[0]
        let line = reply.stringValue?.split(whereSeparator: \.isNewline).first { $0.hasPrefix("used_memory:") }
        guard let value = line.flatMap({ Int($0.dropFirst("used_memory:".count)) }) else {
            throw DedupError(.storeError, "INFO memory gave no used_memory: \(reply)")
        }
        return value
    }

    /// One command per key, pipelined a thousand at a time; throws the first error reply.
    private static func run(
        _ keys: [[UInt8]],
        on store: RedisDedupStore,
        _ command: ([UInt8]) -> RedisCommand
    ) async throws {
        for start in stride(from: 0, to: keys.count, by: 1000) {
            let replies = try await store.execute(keys[start..<min(start + 1000, keys.count)].map(command))
            if let text = replies.lazy.compactMap(\.errorText).first {
                throw DedupError(.storeError, "measuring the memory footprint: \(text)")
            }
        }
    }
}

extension RedisCommand {
    /// The command with one more argument.
    fileprivate static func + (command: RedisCommand, argument: [UInt8]) -> RedisCommand {
        var command = command
        command.append(argument)
        return command
    }
}
