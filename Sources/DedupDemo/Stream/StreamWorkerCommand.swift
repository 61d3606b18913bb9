import ArgumentParser
import Dedup
import DedupPostgres
import DedupRedis
import DedupRedisStreams
import DedupSQLite
import DedupStoreLocator
import Foundation
import Logging

/// `dedup-demo stream-worker` (the first argument; not a listed subcommand): one consumer process of the stream demo, started (and killed) by
/// the demo itself; not for users. It reads the stream as one consumer of the group until it is
/// killed. With SQLite the effect row commits with the completion (transactional mode); with
/// Redis it is appended to this process's ledger file, flushed to disk before the completion.
struct StreamWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream-worker",
        abstract: "One consumer process of the stream demo (started by dedup-demo).",
        shouldDisplay: false
    )

    @Option var broker: String
    @Option var store: String
    @Option var namespace: String
    @Option var consumerName: String
    @Option(help: "The folder for this process's effect ledger (stores without transactions).")
    var ledgerFolder: String
    @Flag var verbose = false

    func run() async throws {
        var logger = Logger(label: "dedup")
        logger.logLevel = verbose ? .debug : .warning
        let location = try StreamBrokerLocation(parsing: broker)
        let dedupStore: any DedupStore
        switch try StoreLocation(parsing: store) {
        case .sqlite(let path): dedupStore = try SQLiteDedupStore(path: path, logger: logger)
        case .redis(let url): dedupStore = try RedisDedupStore(url: url, logger: logger)
        case .postgres(let url): dedupStore = try await PostgresDedupStore(url: url, logger: logger)
        }
        var consumerConfiguration = ConsumerConfiguration()
        consumerConfiguration.lease = StreamDemoSettings.lease
        consumerConfiguration.renewalInterval = StreamDemoSettings.lease / 4
        let consumer = try IdempotentConsumer(
            store: dedupStore,
            namespace: namespace,
            configuration: consumerConfiguration,
            logger: logger
        )

        var configuration = RedisStreamConsumer.Configuration(stream: location.stream, group: namespace)
        configuration.consumerName = consumerName
        configuration.keyStrategy = .field(StreamDemoSettings.orderField)
        configuration.entriesInFlight = 4
        configuration.readCount = 20
        configuration.blockTimeout = .milliseconds(200)
        configuration.reclaimIdleTime = StreamDemoSettings.reclaimIdleTime
        configuration.reclaimInterval = .milliseconds(200)
        configuration.maxDeliveries = StreamDemoSettings.maxDeliveries
        configuration.deadLetterStream = location.deadLetterStream

        let service: RedisStreamConsumer
        if let sqlite = dedupStore as? SQLiteDedupStore {
            let ledger = try await SQLiteEffectLedger(store: sqlite, run: namespace)
            service = try RedisStreamConsumer(
                url: location.url,
                configuration: configuration,
                consumer: consumer,
                logger: logger
            ) { entry in
                let order = entry[StreamDemoSettings.orderField] ?? ""
                try await Task.sleep(for: StreamDemoSettings.work)
                return try await ledger.applyTransactionally(
                    messageID: order,
                    key: order,
                    brokerTime: entry.id.brokerTime,
                    consumer: consumer
                ) { _ in
                    // Rolls the effect row back with the claim.
                    if entry[StreamDemoSettings.poisonField] != nil { throw PoisonMessage(order: order) }
                }.0
            }
        } else {
            let ledger = try FileEffectLedger(
                path: URL(fileURLWithPath: ledgerFolder).appendingPathComponent(
                    "effects-\(consumerName)-\(getpid()).log"
                ).path
            )
            service = try RedisStreamConsumer(
                url: location.url,
                configuration: configuration,
                consumer: consumer,
                logger: logger
            ) {
                entry,
                context in
                let order = entry[StreamDemoSettings.orderField] ?? ""
                if entry[StreamDemoSettings.poisonField] != nil { throw PoisonMessage(order: order) }
                try ledger.append(messageID: order, fencingToken: context.fencingToken)
                // Work after the effect: a kill here leaves the effect without its completion.
                try await Task.sleep(for: StreamDemoSettings.work)
            }
        }
        try await service.run()
    }
}

/// A poison message's handler failure: it fails on every delivery.
struct PoisonMessage: Error, CustomStringConvertible {
    var order: String
    var description: String { "\(order) is a poison message: its handler fails every time" }
}

/// One process's effect ledger for stores without transactions: a line per handler run,
/// `<message ID> <pid> <fencing token>`, appended with one write(2) and flushed to disk with
/// fsync(2) before the handler returns, so an effect survives the process being killed right after.
final class FileEffectLedger: Sendable {
    private let descriptor: Int32
    private let pid = getpid()

    init(path: String) throws {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw DedupError(.invalidConfiguration, "cannot open the effect ledger \(path)") }
    }

    func append(messageID: String, fencingToken: Int64) throws {
        var line = "\(messageID) \(pid) \(fencingToken)\n"
        let written = line.withUTF8 { write(descriptor, $0.baseAddress, $0.count) }
        guard written == line.utf8.count, fsync(descriptor) == 0 else {
            throw DedupError(.storeError, "cannot write the effect ledger (errno \(errno))")
        }
    }

    /// The applications recorded in the ledger files of `folder`, in file order.
    static func applications(
        in folder: String
    ) throws -> [String: [(messageID: String, pid: Int32, fencingToken: Int64)]] {
        var byFile: [String: [(messageID: String, pid: Int32, fencingToken: Int64)]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder) where name.hasPrefix("effects-") {
            let text = try String(
                contentsOfFile: URL(fileURLWithPath: folder).appendingPathComponent(name).path,
                encoding: .utf8
            )
            byFile[name] = text.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard fields.count == 3, let pid = Int32(fields[1]), let token = Int64(fields[2]) else { return nil }
                return (String(fields[0]), pid, token)
            }
        }
        return byFile
    }
}
