import Dedup
import DedupTestKit
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Keeps every log line with its metadata (the logger's own and the line's).
final class LogRecorder: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let lines = Mutex<[Line]>([])
    var all: [Line] { lines.withLock { $0 } }

    func logger() -> Logger {
        var logger = Logger(label: "owner-label-tests") { _ in Handler(recorder: self) }
        logger.logLevel = .debug
        return logger
    }

    func append(_ line: Line) { lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            recorder.append(
                Line(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" })
            )
        }
    }
}

@Suite("IdempotentConsumer owner labels")
struct OwnerLabelConsumerTests {
    let clock = ManualDedupClock()

    @Test("the owner label defaults to host:pid; an empty or over-long one is refused when the consumer is made")
    func defaultAndValidation() throws {
        let label = ConsumerConfiguration().ownerLabel
        #expect(label == ClaimRequest.defaultOwnerLabel)
        #expect(label.hasSuffix(":\(getpid())"))
        #expect(label.utf8.count > "\(getpid())".utf8.count + 1, "a host name before the pid")
        #expect(
            ClaimRequest(id: try RecordID(namespace: "n", key: "k"), lease: .seconds(1), retention: .seconds(1))
                .ownerLabel == label
        )
        for bad in ["", String(repeating: "x", count: ClaimRequest.maximumOwnerLabelBytes + 1)] {
            var configuration = ConsumerConfiguration()
            configuration.ownerLabel = bad
            #expect {
                try IdempotentConsumer(
                    store: InMemoryDedupStore(clock: clock),
                    namespace: "orders",
                    configuration: configuration
                )
            } throws: { ($0 as? DedupError)?.code == .invalidConfiguration }
        }
    }

    @Test(
        "the records a consumer holds in flight carry its owner label, on the single and the batch path; completed ones none"
    )
    func recordsCarryTheLabel() async throws {
        let store = InMemoryDedupStore(clock: clock)
        var configuration = ConsumerConfiguration()
        configuration.ownerLabel = "pod-7 (blue)"
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration)
        let seen = Mutex<[String?]>([])
        _ = try await consumer.process(key: "single") { context in
            let record = try await store.record(for: context.id!)
            seen.withLock { $0 += [context.lease?.ownerLabel, record?.ownerLabel] }
        }
        let results = try await consumer.processBatch(["b-1", "b-2"], keyStrategy: .messageID { $0 }) { _, context in
            let record = try await store.record(for: context.id!)
            seen.withLock { $0 += [context.lease?.ownerLabel, record?.ownerLabel] }
        }
        #expect(results.allSatisfy { (try? $0.get()) == .applied })
        #expect(seen.withLock { $0 } == Array(repeating: "pod-7 (blue)", count: 6))
        for key in ["single", "b-1", "b-2"] {
            let record = try await store.record(for: try RecordID(namespace: "orders", key: key))
            #expect(record?.state == .completed && record?.ownerLabel == nil, "\(key)")
        }
    }

    @Test("the consumer's log lines carry its owner label; a deferral names the holder")
    func logLinesCarryTheLabel() async throws {
        let store = InMemoryDedupStore(clock: clock)
        let recorder = LogRecorder()
        var configuration = ConsumerConfiguration()
        configuration.ownerLabel = "pod-7"
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            logger: recorder.logger()
        )
        let id = try RecordID(namespace: "orders", key: "abandoned")
        _ = try await store.claim(
            ClaimRequest(id: id, lease: .seconds(30), retention: .seconds(3600), ownerLabel: "pod-crashed")
        )

        let early = try await consumer.process(key: "abandoned") { _ in Issue.record("ran during a live lease") }
        #expect(early != .applied)
        let deferral = try #require(recorder.all.first { $0.message == "key in flight elsewhere" })
        #expect(deferral.metadata["dedup.holder"] == "pod-crashed")
        #expect(deferral.metadata["dedup.owner"] == "pod-7")

        clock.advance(by: .seconds(31))
        #expect(try await consumer.process(key: "abandoned") { _ in } == .applied)
        let takeover = try #require(recorder.all.first { $0.message == "took over an expired lease" })
        #expect(takeover.metadata["dedup.owner"] == "pod-7")
        #expect(takeover.metadata["dedup.id"] == "\(id)")
    }
}
