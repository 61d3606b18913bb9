import Dedup
import Foundation
import Logging

extension RedisStreamConsumer {
    /// Starts the handlers of entries read (those not already in flight here), as child tasks
    /// of the read loop's group.
    func dispatch(
        _ entries: [StreamEntry],
        client: StreamClient,
        inFlight: InFlightEntries,
        group: inout ThrowingDiscardingTaskGroup<any Error>
    ) {
        guard !entries.isEmpty else { return }
        metrics.read.increment(by: Int64(entries.count))
        let started = inFlight.start(entries)
        guard !started.isEmpty else { return }
        switch configuration.processingMode {
        case .oneByOne:
            for entry in started {
                group.addTask {
                    await processOneByOne(entry, client: client)
                    inFlight.finish([entry.id])
                }
            }
        case .batch:
            group.addTask {
                await processBatch(started, client: client)
                inFlight.finish(started.map(\.id))
            }
        }
    }

    private func processOneByOne(_ entry: StreamEntry, client: StreamClient) async {
        if let entryProcessor {
            await settle([entry], [await processed(entry, by: entryProcessor)], client: client)
            return
        }
        let result: Result<ProcessOutcome, any Error>
        do {
            result = .success(
                try await consumer.process(
                    entry,
                    keyStrategy: configuration.keyStrategy,
                    brokerTime: entry.id.brokerTime
                ) {
                    entry,
                    context in try await handler(entry, context)
                }
            )
        } catch {
            result = .failure(error)
        }
        await settle([entry], [result], client: client)
    }

    private func processBatch(_ entries: [StreamEntry], client: StreamClient) async {
        if let entryProcessor {
            var outcomes: [Result<ProcessOutcome, any Error>] = []
            for entry in entries { outcomes.append(await processed(entry, by: entryProcessor)) }
            await settle(entries, outcomes, client: client)
            return
        }
        let results: [Result<ProcessOutcome, any Error>]
        do {
            results = try await consumer.processBatch(
                entries,
                keyStrategy: configuration.keyStrategy,
                brokerTime: { $0.id.brokerTime }
            ) {
                entry,
                context in try await handler(entry, context)
            }
        } catch {
            // The batch claim failed (fail-closed): nothing ran.
            results = entries.map { _ in .failure(error) }
        }
        await settle(entries, results, client: client)
    }

    /// Acks the entries whose records are completed, in one `XACK`; dead-letters the failed ones
    /// on their last delivery; leaves the rest pending. Errors here are logged: an entry not
    /// acked for them comes again, and is then answered as a duplicate.
    private func settle(
        _ entries: [StreamEntry],
        _ results: [Result<ProcessOutcome, any Error>],
        client: StreamClient
    ) async {
        var actions = [Settlement.Action](repeating: .leftPending, count: entries.count)
        var acks: [StreamEntryID] = []
        for index in entries.indices {
            if case .success(let outcome) = results[index], outcome.shouldAck {
                acks.append(entries[index].id)
                actions[index] = .acked
            }
        }
        if !acks.isEmpty {
            do {
                metrics.acked.increment(by: Int64(try await client.ack(acks)))
            } catch {
                logger.warning(
                    "cannot ack processed entries; they come again as duplicates",
                    metadata: ["error": "\(error)"]
                )
                for index in entries.indices where actions[index] == .acked { actions[index] = .leftPending }
            }
        }
        for index in entries.indices {
            guard case .failure(let error) = results[index] else { continue }
            if Self.countsTowardDeadLetter(error) {
                actions[index] = await deadLetterIfExhausted(entries[index], error: error, client: client)
            } else {
                logger.debug(
                    "entry not processed; left pending",
                    metadata: ["entry": "\(entries[index].id)", "error": "\(error)"]
                )
            }
        }
        if let onSettled {
            for index in entries.indices {
                onSettled(Settlement(entryID: entries[index].id, outcome: results[index], action: actions[index]))
            }
        }
    }

    /// Moves a failed entry to the dead-letter stream if this was its last allowed delivery.
    private func deadLetterIfExhausted(
        _ entry: StreamEntry,
        error: any Error,
        client: StreamClient
    ) async -> Settlement.Action {
        do {
            // Acked (or dead-lettered) meanwhile by another consumer: nothing left to do.
            guard let deliveries = try await client.deliveryCount(of: entry.id) else { return .leftPending }
            guard deliveries >= configuration.maxDeliveries else {
                logger.warning(
                    "entry failed; it comes again after the reclaim idle time",
                    metadata: ["entry": "\(entry.id)", "deliveries": "\(deliveries)", "error": "\(error)"]
                )
                return .leftPending
            }
            guard try await client.deadLetter(entry, deliveries: deliveries, lastError: "\(error)") else {
                return .leftPending
            }
            metrics.deadLettered.increment()
            logger.error(
                "entry failed on its last delivery; moved to the dead-letter stream",
                metadata: [
                    "entry": "\(entry.id)", "deliveries": "\(deliveries)",
                    "deadLetterStream": "\(configuration.deadLetterStreamKey)",
                    "error": "\(error)",
                ]
            )
            return .deadLettered
        } catch let failure {
            logger.warning(
                "cannot dead-letter a failed entry; it stays pending",
                metadata: ["entry": "\(entry.id)", "error": "\(failure)"]
            )
            return .leftPending
        }
    }

    /// Failures that say something about the entry (its handler's error, a missing key, a payload
    /// mismatch, a handler's own failed SQL statement) count toward dead-lettering; a lost lease
    /// (someone else holds it now), a store failure or a cancellation (shutdown) says nothing about
    /// the entry and does not. A store failure counts as one even when the handler threw it (from
    /// a store call of its own): an outage must not fill the dead-letter stream.
    static func countsTowardDeadLetter(_ error: any Error) -> Bool {
        if error is CancellationError { return false }
        guard let error = error as? DedupError else { return true }
        return error.code != .leaseLost && !error.isStoreFailure
    }
}
