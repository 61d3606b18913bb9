// A consumer process for the multi-process tests: runs IdempotentConsumer over a shared store and
// appends one line per handler run to a ledger file, so a test can prove each key ran once across
// processes. Not a product; the tests start several of these at once.
import Dedup
import DedupStoreLocator
import DedupTestKit
import Foundation

struct Options {
    var store = ""
    var namespace = "workers"
    var keys = 200
    var rounds = 2
    var ledger = ""
    var handlerMicroseconds = 0
    var batch = 1
    var seed = UInt64(getpid())
    /// A folder for a start barrier: once connected the worker writes `ready-<pid>` there and waits
    /// for a file named `go`, so processes started one after another begin together.
    var barrier: String?
    /// Transactional mode (a PostgreSQL store): each handler run inserts a row into this table of
    /// the store's database in the transaction that completes its key (PostgresInbox.swift).
    var effectsTable: String?
    /// Whether a call failing with `storeUnavailable` or `timeout` (a cluster failing over, say)
    /// leaves its messages for a later retry, as a broker would redeliver them, instead of ending
    /// the worker.
    var retriesUnavailable = false
    /// The consumer's lease, in milliseconds.
    var leaseMilliseconds = 30_000
}

func parse() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst().makeIterator()
    while let flag = arguments.next() {
        guard let value = arguments.next() else { fail("missing value for \(flag)") }
        switch flag {
        case "--store": options.store = value
        case "--namespace": options.namespace = value
        case "--keys": options.keys = Int(value) ?? options.keys
        case "--rounds": options.rounds = Int(value) ?? options.rounds
        case "--ledger": options.ledger = value
        case "--handler-us": options.handlerMicroseconds = Int(value) ?? 0
        case "--batch": options.batch = max(1, Int(value) ?? 1)
        case "--seed": options.seed = UInt64(value) ?? options.seed
        case "--barrier": options.barrier = value
        case "--effects-table": options.effectsTable = value
        case "--retry-unavailable": options.retriesUnavailable = value == "yes"
        case "--lease-ms": options.leaseMilliseconds = Int(value) ?? options.leaseMilliseconds
        default: fail("unknown option \(flag)")
        }
    }
    if options.store.isEmpty || options.ledger.isEmpty { fail("--store and --ledger are required") }
    return options
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("dedup-worker: \(message)\n".utf8))
    exit(2)
}

/// Appends a line with one write(2) on an O_APPEND descriptor: atomic between processes.
struct Ledger: Sendable {
    let descriptor: Int32
    init(path: String) {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        if descriptor < 0 { fail("cannot open ledger \(path)") }
    }
    func append(_ line: String) {
        var line = line + "\n"
        line.withUTF8 { bytes in _ = write(descriptor, bytes.baseAddress, bytes.count) }
    }
}

let options = parse()
let ledger = Ledger(path: options.ledger)
let pid = getpid()
if let effectsTable = options.effectsTable {
    await runInbox(options, effectsTable: effectsTable, ledger: ledger)
    exit(0)
}
do {
    let store = try await StoreLocation(parsing: options.store).open(postgres: .init())
    var configuration = ConsumerConfiguration()
    configuration.lease = .milliseconds(options.leaseMilliseconds)
    configuration.renewalInterval = .milliseconds(options.leaseMilliseconds / 3)
    configuration.inFlightPolicy = .defer
    let consumer = try IdempotentConsumer(store: store, namespace: options.namespace, configuration: configuration)
    var random = SplitMix64(seed: options.seed)
    if let barrier = options.barrier {
        // Connect first, so start-up costs are paid before the race begins.
        _ = try await store.record(for: RecordID(namespace: options.namespace, key: "warm-up"))
        _ = FileManager.default.createFile(atPath: "\(barrier)/ready-\(pid)", contents: nil)
        while !FileManager.default.fileExists(atPath: "\(barrier)/go") {
            try await Task.sleep(for: .milliseconds(1))
        }
    }
    var applied = 0
    var duplicates = 0
    var deferred = 0
    var unavailable = 0
    let handlerMicroseconds = options.handlerMicroseconds
    for _ in 0..<options.rounds {
        var pending = Array(0..<options.keys).shuffled(using: &random)
        // Deferred keys (in flight in another process) are retried until each ends applied or duplicate.
        while !pending.isEmpty {
            var retry: [Int] = []
            for chunkStart in stride(from: 0, to: pending.count, by: options.batch) {
                let chunk = Array(pending[chunkStart..<min(chunkStart + options.batch, pending.count)])
                let handler: (Int, DedupContext) -> Void = { number, context in
                    ledger.append("\(number) \(pid) \(context.fencingToken)")
                    if handlerMicroseconds > 0 { usleep(UInt32(handlerMicroseconds)) }
                }
                // One message goes through the single-message path, more through the batch path.
                let outcomes: [ProcessOutcome]
                do {
                    if chunk.count == 1 {
                        outcomes = [try await consumer.process(key: "key-\(chunk[0])") { handler(chunk[0], $0) }]
                    } else {
                        outcomes = try await consumer.processBatch(chunk, keyStrategy: .messageID { "key-\($0)" }) {
                            handler($0, $1)
                        }.map { try $0.get() }
                    }
                } catch let error as DedupError
                    where options.retriesUnavailable && (error.code == .storeUnavailable || error.code == .timeout)
                {
                    unavailable += 1
                    retry += chunk
                    continue
                }
                for (number, outcome) in zip(chunk, outcomes) {
                    switch outcome {
                    case .applied: applied += 1
                    case .duplicate: duplicates += 1
                    case .deferred:
                        deferred += 1
                        retry.append(number)
                    case .bypassed: fail("bypassed a key")
                    }
                }
            }
            if !retry.isEmpty { usleep(2000) }
            pending = retry
        }
    }
    print(
        "{\"pid\":\(pid),\"applied\":\(applied),\"duplicates\":\(duplicates),\"deferred\":\(deferred),\"unavailable\":\(unavailable)}"
    )
} catch {
    fail("\(error)")
}
