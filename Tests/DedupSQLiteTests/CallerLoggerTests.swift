import Dedup
import DedupSQLite
import Foundation
import Logging
import Synchronization
import Testing

/// Keeps the messages logged through it.
private final class MessageRecorder: Sendable {
    let messages = Mutex<[String]>([])

    struct Handler: LogHandler {
        let recorder: MessageRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { recorder.messages.withLock { $0.append("\(event.message)") } }
    }

    func logger() -> Logger { Logger(label: "caller") { _ in Handler(recorder: self) } }
}

@Suite("SQLite store logging")
struct CallerLoggerTests {
    @Test("a store made without a logger logs through the caller's task logger, as the consumer does")
    func storeUsesTheCallersLogger() throws {
        let directory = TemporaryDirectory()
        let recorder = MessageRecorder()
        let store = try withLogger(recorder.logger()) { _ in
            try SQLiteDedupStore(path: directory.file())
        }
        store.close()
        #expect(
            recorder.messages.withLock { $0 }.contains { $0.contains("migration") },
            "\(recorder.messages.withLock { $0 })"
        )
    }
}
