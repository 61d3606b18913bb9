// The PostgreSQL paths: IdempotentConsumer over PostgresDedupStore on a server the benchmark starts
// (the tests' launcher: initdb in a temporary folder, a port of its own), against the C ceiling over
// libpq (Benchmarks/Ceilings/postgres_ceiling.c) and a bare postgres-nio loop of the same statements.
// Every pass works in a schema of its own, so its keys are new to it.
import Dedup
import DedupPostgres
import DedupTestSupport
import Foundation
import Logging
import PostgresNIO

/// The run's PostgreSQL server and the client our paths and the postgres-nio loop share.
final class PostgresBench: Sendable {
    let server: PostgresServer
    let client: PostgresClient
    private let clientRun: Task<Void, Never>
    /// The compiled C ceiling; `nil` without ceilings.
    let ceilingProgram: String?

    /// The kinds of pass, as the C ceiling names them.
    enum Mode: String, CaseIterable {
        case single, batch, txn

        /// The `--group` that runs it.
        var group: DedupBench.Group {
            switch self {
            case .single: return .single
            case .batch: return .batch
            case .txn: return .txn
            }
        }
    }

    private init(server: PostgresServer, ceilingProgram: String?) {
        self.server = server
        var configuration = PostgresClient.Configuration(
            host: "127.0.0.1",
            port: server.port,
            username: server.user,
            password: server.password,
            database: "postgres",
            tls: .disable
        )
        configuration.options.maximumConnections = 4
        client = PostgresClient(configuration: configuration)
        clientRun = Task { [client] in await client.run() }
        self.ceilingProgram = ceilingProgram
    }

    /// Starts a server (as the tests do: as the `postgres` user when run as root) and a client on it.
    static func start(programs: CPrograms?) async throws -> PostgresBench {
        let ceiling = try programs?.executable(source: "Benchmarks/Ceilings/postgres_ceiling.c", library: "pq")
        let server = try await PostgresServer.start()
        progress("postgres on 127.0.0.1:\(server.port) (\(server.directory.path))")
        return PostgresBench(server: server, ceilingProgram: ceiling)
    }

    /// Stops the client and the server (which removes its folder).
    func stop() async {
        clientRun.cancel()
        await server.stop()
    }

    /// A schema no pass used, migrated by opening a store on it, with the effect table.
    func freshStore(logger: Logger) async throws -> (store: PostgresDedupStore, schema: String) {
        let schema = "bench_\(UInt32.random(in: 0...UInt32.max))"
        let store = try await PostgresDedupStore(
            client: client,
            configuration: .init(schema: schema),
            logger: logger
        )
        try await client.query(
            "CREATE TABLE \(unescaped: quoted(schema)).\(unescaped: effectTable) (message_id text NOT NULL, fencing bigint NOT NULL)"
        )
        return (store, schema)
    }

    /// Drops a pass's schema, so the server's tables stay small from pass to pass.
    func drop(_ schema: String) async throws {
        try await client.query("DROP SCHEMA \(unescaped: quoted(schema)) CASCADE")
    }

    /// The rows of the effect table of `schema`.
    func effectRows(_ schema: String) async throws -> Int {
        let rows = try await client.query("SELECT count(*) FROM \(unescaped: quoted(schema)).\(unescaped: effectTable)")
            .collect()
        return Int(try rows.first?.decode(Int64.self) ?? -1)
    }

    /// One pass of the C ceiling (new keys, then the same again) in a fresh schema; its output lines.
    func runCeiling(_ mode: Mode, n: Int, logger: Logger) async throws -> String {
        guard let ceilingProgram else { throw BenchError("the PostgreSQL ceiling was not built for this run") }
        let (_, schema) = try await freshStore(logger: logger)
        let conninfo = "host=127.0.0.1 port=\(server.port) user=\(server.user) dbname=postgres"
        let output = try runProgram(
            ceilingProgram,
            [conninfo, schema, mode.rawValue, "\(n)"],
            environment: ["PGPASSWORD": server.password]
        )
        try await drop(schema)
        return output
    }

    /// One pass of the same statements as the ceiling through postgres-nio alone (no store, no
    /// consumer), printed as the ceiling prints it.
    func runBareLoop(_ mode: Mode, keys: [String], logger: Logger) async throws -> String {
        let (_, schema) = try await freshStore(logger: logger)
        let loop = BarePostgresLoop(client: client, schema: schema, logger: logger)
        var output = ""
        for pass in ["unique", "duplicate"] {
            let clock = ContinuousClock()
            let start = clock.now
            let size = mode == .batch ? 100 : 1
            var acquired = 0
            for first in stride(from: 0, to: keys.count, by: size) {
                let chosen = Array(keys[first..<min(keys.count, first + size)])
                acquired += try await loop.claimAndComplete(chosen, pass: pass, transactional: mode == .txn)
            }
            let seconds = (clock.now - start).seconds
            guard acquired == (pass == "unique" ? keys.count : 0) else {
                throw BenchError(
                    "the bare postgres-nio loop acquired \(acquired) of \(keys.count) keys in its \(pass) pass"
                )
            }
            output += String(
                format: "postgres mode=%@ batch=%d pass=%@ n=%d seconds=%.3f msgs_per_s=%.0f\n",
                mode.rawValue,
                size,
                pass,
                keys.count,
                seconds,
                Double(keys.count) / seconds
            )
        }
        try await drop(schema)
        return output
    }
}

/// `name` as a quoted SQL identifier.
private func quoted(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// The store's statements (Migrations/postgres: the claim and completion functions) sent straight
/// through a `PostgresClient`, as an application would without the store: what postgres-nio itself
/// costs per message.
struct BarePostgresLoop {
    let client: PostgresClient
    let schema: String
    let logger: Logger

    private var claimSQL: String {
        "SELECT * FROM \(quoted(schema)).dedup_claim($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], "
            + "$6::bigint[], $7::bytea[], $8::bool[], $9::bigint[], $10::bigint)"
    }

    private var completeSQL: String {
        "SELECT * FROM \(quoted(schema)).dedup_complete($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], "
            + "$5::bytea[], $6::bool[])"
    }

    /// Claims `keys` in one statement and completes those acquired in another (in a transaction
    /// with one effect row each when `transactional`); returns how many were acquired.
    func claimAndComplete(_ keys: [String], pass: String, transactional: Bool) async throws -> Int {
        if transactional {
            return try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                do {
                    let acquired = try await run(keys, pass: pass, on: connection, effects: true)
                    try await connection.query("COMMIT", logger: logger)
                    return acquired
                } catch {
                    // The connection goes back to the pool: never with a transaction left open.
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
        }
        return try await client.withConnection { connection in
            try await run(keys, pass: pass, on: connection, effects: false)
        }
    }

    private func run(
        _ keys: [String],
        pass: String,
        on connection: PostgresConnection,
        effects: Bool
    ) async throws
        -> Int
    {
        let tokens = keys.map { "\(pass)-\($0)-0000-4000-8000-000000000000" }
        var bindings = PostgresBindings(capacity: 10)
        bindings.append(keys.map { _ in ByteBuffer(string: "bench") })
        bindings.append(keys.map { ByteBuffer(string: $0) })
        bindings.append(tokens.map { ByteBuffer(string: $0) })
        bindings.append(keys.map { _ in ByteBuffer(string: "bench-host:4242") })
        bindings.append(keys.map { _ in Int64(30_000) })
        bindings.append(keys.map { _ in Int64(86_400_000) })
        bindings.append(keys.map { _ in ByteBuffer() })
        bindings.append(keys.map { _ in false })
        bindings.append(keys.map { _ in Int64(-1) })
        // As the store does: the claim bounds lock waits (for the rest of a transaction) at 5 s.
        bindings.append(Int64(5_000))
        var acquired: [Int] = []
        let rows = try await connection.query(PostgresQuery(unsafeSQL: claimSQL, binds: bindings), logger: logger)
            .collect()
        for row in rows {
            let columns = row.makeRandomAccess()
            let position = Int(try columns[0].decode(Int64.self)) - 1
            guard let fencing = try columns[2].decode(Int64?.self) else { continue }
            acquired.append(position)
            if effects {
                try await connection.query(
                    "INSERT INTO \(unescaped: quoted(schema)).\(unescaped: effectTable) (message_id, fencing) VALUES (\(keys[position]), \(fencing))",
                    logger: logger
                )
            }
        }
        guard !acquired.isEmpty else { return 0 }
        var completion = PostgresBindings(capacity: 6)
        completion.append(acquired.map { _ in ByteBuffer(string: "bench") })
        completion.append(acquired.map { ByteBuffer(string: keys[$0]) })
        completion.append(acquired.map { ByteBuffer(string: tokens[$0]) })
        completion.append(acquired.map { _ in Int64(86_400_000) })
        completion.append(acquired.map { _ in ByteBuffer() })
        completion.append(acquired.map { _ in false })
        let completed = try await connection.query(
            PostgresQuery(unsafeSQL: completeSQL, binds: completion),
            logger: logger
        ).collect()
        guard completed.count == acquired.count else {
            throw BenchError("the bare postgres-nio loop completed \(completed.count) of \(acquired.count) keys")
        }
        return acquired.count
    }
}

extension DedupBench {
    /// Our PostgreSQL pass of one kind of path in a fresh schema: new keys, then the same keys again.
    func runPostgres(_ mode: PostgresBench.Mode, _ workload: Workload, into results: inout RunResults) async throws {
        guard let postgres = workload.postgres else { return }
        let logger = workload.logger
        let (store, schema) = try await postgres.freshStore(logger: logger)
        let consumer = try IdempotentConsumer(store: store, namespace: "bench", logger: logger)
        let keys = workload.postgresKeys
        switch mode {
        case .single:
            _ = try await measureSingle(consumer, keys: workload.warmUp, expect: .applied)
            try await recordNewThenDuplicates(.postgresSingle, .postgresSingleDuplicate, into: &results) { expect in
                try await measureSingle(consumer, keys: keys, expect: expect)
            }
        case .batch:
            let batches = batched(keys, size: 100)
            _ = try await measureBatches(consumer, batches: [workload.warmUp], expect: .applied)
            try await recordNewThenDuplicates(.postgresBatch, .postgresBatchDuplicate, into: &results) { expect in
                try await measureBatches(consumer, batches: batches, expect: expect)
            }
        case .txn:
            let insert = "INSERT INTO \(quoted(schema)).\(effectTable) (message_id, fencing) VALUES ($1, $2)"
            let process = { (key: String) in
                try await consumer.processInTransaction(key: key) { connection, context in
                    var bindings = PostgresBindings(capacity: 2)
                    bindings.append(key)
                    bindings.append(context.fencingToken)
                    try await connection.query(PostgresQuery(unsafeSQL: insert, binds: bindings), logger: logger)
                }
            }
            _ = try await measureOneByOne(keys: workload.warmUp, expect: .applied, process)
            try await recordNewThenDuplicates(.postgresTxn, .postgresTxnDuplicate, into: &results) { expect in
                try await measureOneByOne(keys: keys, expect: expect, process)
            }
            // Every new key wrote its effect row, no duplicate did.
            let effects = try await postgres.effectRows(schema)
            guard effects == workload.warmUp.count + keys.count else {
                throw BenchError(
                    "the PostgreSQL transactional pass left \(effects) effect rows for \(workload.warmUp.count + keys.count) new keys"
                )
            }
        }
        try await postgres.drop(schema)
    }

    /// Records a pass of new keys on `new`, then a pass of the same keys again on `duplicate`.
    func recordNewThenDuplicates(
        _ new: BenchPath,
        _ duplicate: BenchPath,
        into results: inout RunResults,
        _ measure: (Expected) async throws -> Measurement
    ) async throws {
        record(new, try await measure(.applied), into: &results)
        record(duplicate, try await measure(.duplicate), into: &results)
    }

    /// The C ceiling's pass of one kind of path, then (right after it, so the two share the
    /// machine's mood) the bare postgres-nio loop's.
    func runPostgresReferences(
        _ mode: PostgresBench.Mode,
        _ workload: Workload,
        into results: inout RunResults
    ) async throws {
        guard let postgres = workload.postgres else { return }
        let n = workload.postgresKeys.count
        if postgres.ceilingProgram != nil {
            progress("ceiling: postgres \(mode.rawValue), N=\(n)")
            let output = try await postgres.runCeiling(mode, n: n, logger: workload.logger)
            FileHandle.standardError.write(Data(output.utf8))
            results.ceilings.take(output)
        }
        progress("bare postgres-nio loop: \(mode.rawValue), N=\(n)")
        let output = try await postgres.runBareLoop(mode, keys: workload.postgresKeys, logger: workload.logger)
        FileHandle.standardError.write(Data(output.utf8))
        results.postgresNIO.take(output)
    }
}
