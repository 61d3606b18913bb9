import Dedup
import DedupSQLite
import DedupTestKit
import DedupTestSupport
import Foundation
import Synchronization
import Testing

struct HandlerFailed: Error {}

@Suite("SQLite transactional claims")
struct TransactionalTests {
    func store(_ fixture: StoreFixture) async throws -> SQLiteDedupStore {
        let store = try SQLiteDedupStore(path: fixture.path, configuration: fixture.configuration, logger: quietLogger)
        _ = try await store.withTransactionalClaim(request("setup", namespace: "setup"), retention: .seconds(1)) {
            tx,
            _ in
            try tx.execute("CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
            return nil
        }
        return store
    }

    func ledger(_ store: SQLiteDedupStore) async throws -> [String: Int64] {
        let outcome = try await store.withTransactionalClaim(
            ClaimRequest(id: makeID(UUID().uuidString, namespace: "reads"), lease: .seconds(1), retention: .zero),
            retention: .zero
        ) { tx, _ in
            let rows = try tx.query("SELECT key, amount FROM ledger ORDER BY key")
            let encoded = rows.map { "\($0["key"]!.string!)=\($0["amount"]!.int64!)" }.joined(separator: ",")
            return Data(encoded.utf8)
        }
        guard case .committed(_, let result?) = outcome else { return [:] }
        var ledger: [String: Int64] = [:]
        for pair in String(decoding: result, as: UTF8.self).split(separator: ",") {
            let parts = pair.split(separator: "=")
            ledger[String(parts[0])] = Int64(parts[1])
        }
        return ledger
    }

    @Test("the handler's write and the completion commit together; a redelivery is a duplicate and does not run")
    func commitTogether() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let outcome = try await store.withTransactionalClaim(request("pay-1"), retention: .seconds(3600)) { tx, lease in
            #expect(lease.fencingToken == 1)
            let changed = try tx.execute("INSERT INTO ledger (key, amount) VALUES (?, ?)", .text("pay-1"), 42)
            #expect(changed == 1)
            return Data("receipt".utf8)
        }
        guard case .committed(let lease, let result) = outcome else {
            Issue.record("expected committed, got \(outcome)")
            return
        }
        #expect(result == Data("receipt".utf8))
        let record = try #require(try await store.record(for: lease.id))
        #expect(record.state == .completed)
        #expect(record.result == Data("receipt".utf8))
        let ran = Counter()
        let again = try await store.withTransactionalClaim(request("pay-1"), retention: .seconds(3600)) { tx, _ in
            _ = ran.next()
            try tx.execute("INSERT INTO ledger (key, amount) VALUES ('pay-1-again', 1)")
            return nil
        }
        guard case .duplicate(let duplicate) = again else {
            Issue.record("expected duplicate, got \(again)")
            return
        }
        #expect(duplicate.result == Data("receipt".utf8))
        #expect(ran.next() == 1, "the handler ran for a duplicate")
        #expect(try await ledger(store) == ["pay-1": 42])
    }

    @Test("a throwing handler rolls back its writes and the claim: no record, and the next attempt runs")
    func rollback() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        await #expect(throws: HandlerFailed.self) {
            _ = try await store.withTransactionalClaim(request("pay-2"), retention: .seconds(3600)) { tx, _ in
                try tx.execute("INSERT INTO ledger (key, amount) VALUES ('pay-2', 7)")
                throw HandlerFailed()
            }
        }
        #expect(try await store.record(for: makeID("pay-2")) == nil)
        #expect(try await ledger(store)["pay-2"] == nil)
        let retry = try await store.withTransactionalClaim(request("pay-2"), retention: .seconds(3600)) { tx, lease in
            #expect(lease.attempt == 1)
            try tx.execute("INSERT INTO ledger (key, amount) VALUES ('pay-2', 7)")
            return nil
        }
        guard case .committed = retry else {
            Issue.record("expected committed, got \(retry)")
            return
        }
        #expect(try await ledger(store)["pay-2"] == 7)
    }

    @Test("a handler's SQL error rolls everything back and surfaces as handlerStatementFailed")
    func sqlError() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        await expectDedupError(.handlerStatementFailed) {
            try await store.withTransactionalClaim(request("pay-3"), retention: .seconds(3600)) { tx, _ in
                try tx.execute("INSERT INTO ledger (key, amount) VALUES ('pay-3', 1)")
                try tx.execute("INSERT INTO no_such_table VALUES (1)")
                return nil
            }
        }
        #expect(try await store.record(for: makeID("pay-3")) == nil)
        #expect(try await ledger(store)["pay-3"] == nil)
    }

    @Test("the handler cannot commit or roll back the dedup transaction, but may use savepoints")
    func transactionControlRefused() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        for statement in ["COMMIT", "ROLLBACK", "BEGIN", "BEGIN IMMEDIATE", "END"] {
            // Not permissionDenied ("not authorized"), which points at the file's permissions.
            let error = await expectDedupError(.handlerStatementFailed) {
                try await store.withTransactionalClaim(request("ctl-\(statement)"), retention: .seconds(3600)) {
                    tx,
                    _ in
                    try tx.execute("INSERT INTO ledger (key, amount) VALUES ('ctl', 1)")
                    try tx.execute(statement)
                    return nil
                }
            }
            #expect(error?.isStoreFailure == false)
            #expect(error?.sqliteExtendedResultCode == 23, "\(String(describing: error))")  // SQLITE_AUTH
            #expect(error?.message.contains("the store owns the transaction") == true, "\(String(describing: error))")
            #expect(error?.message.contains("SAVEPOINT") == true, "\(String(describing: error))")
            #expect(try await store.record(for: makeID("ctl-\(statement)")) == nil)
        }
        await expectDedupError(.handlerStatementFailed) { try await store.withTransaction { try $0.execute("COMMIT") } }
        #expect(try await ledger(store)["ctl"] == nil)
        let outcome = try await store.withTransactionalClaim(request("sp"), retention: .seconds(3600)) { tx, _ in
            try tx.execute("SAVEPOINT inner")
            try tx.execute("INSERT INTO ledger (key, amount) VALUES ('sp-discarded', 1)")
            try tx.execute("ROLLBACK TO inner")
            try tx.execute("RELEASE inner")
            try tx.execute("INSERT INTO ledger (key, amount) VALUES ('sp', 2)")
            return nil
        }
        guard case .committed = outcome else {
            Issue.record("expected committed, got \(outcome)")
            return
        }
        #expect(try await ledger(store) == ["sp": 2])
    }

    @Test(
        "a key in flight under a live lease is reported inFlight and the handler does not run; a passed lease is taken over"
    )
    func inFlightAndTakeover() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let holder = try #require(try await store.claim(request("held", lease: .seconds(10))).lease)
        let outcome = try await store.withTransactionalClaim(request("held"), retention: .seconds(3600)) { _, _ in
            Issue.record("the handler ran while the key was in flight")
            return nil
        }
        guard case .inFlight(let record) = outcome else {
            Issue.record("expected inFlight, got \(outcome)")
            return
        }
        #expect(record.ownerToken == holder.ownerToken)
        fixture.clock.advance(by: .seconds(10))
        let takeover = try await store.withTransactionalClaim(request("held"), retention: .seconds(3600)) { _, lease in
            #expect(lease.isTakeover)
            #expect(lease.fencingToken == 2)
            return nil
        }
        guard case .committed = takeover else {
            Issue.record("expected committed, got \(takeover)")
            return
        }
        await expectDedupError(.leaseLost) {
            try await store.complete(Completion(lease: holder, retention: .seconds(1)))
        }
    }

    @Test(
        "processInTransaction keeps the broker time of the claim that created the record; a redelivery does not change it"
    )
    func transactionalBrokerTime() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", logger: quietLogger)
        let published = Date(millisecondsSince1970: 1_600_000_000_123)
        #expect(try await consumer.processInTransaction(key: "t-b", brokerTime: published) { _, _ in } == .applied)
        let again = try await consumer.processInTransaction(key: "t-b", brokerTime: Date(millisecondsSince1970: 7)) {
            _,
            _ in
        }
        #expect(again != .applied)
        #expect(try await store.record(for: makeID("t-b"))?.brokerTime == published)
        await expectDedupError(.invalidConfiguration) {
            _ = try await consumer.processInTransaction(key: "t-bad", brokerTime: Date(millisecondsSince1970: -1)) {
                _,
                _ in
            }
        }
        #expect(try await store.record(for: makeID("t-bad")) == nil)
    }

    @Test(
        "processInTransaction: the effect and the completion commit together; a redelivery is a duplicate; a held key defers"
    )
    func consumerTransactions() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        let consumer = try IdempotentConsumer(store: store, namespace: "orders", logger: quietLogger)
        let applied = try await consumer.processInTransaction(key: "t-1") { tx, context in
            #expect(context.fencingToken == 1)
            try tx.execute("INSERT INTO ledger(key, amount) VALUES (?, ?)", [.text("t-1"), .integer(5)])
        }
        #expect(applied == .applied)
        let again = try await consumer.processInTransaction(key: "t-1") { _, _ in Issue.record("ran twice") }
        guard case .duplicate = again else {
            Issue.record("expected a duplicate, got \(again)")
            return
        }
        #expect(try await ledger(store) == ["t-1": 5])

        _ = try #require(try await store.claim(request("held", lease: .seconds(10))).lease)
        let deferred = try await consumer.processInTransaction(key: "held") { _, _ in Issue.record("ran while held") }
        guard case .deferred = deferred else {
            Issue.record("expected deferred, got \(deferred)")
            return
        }
    }

    @Test(
        "processInTransaction under the wait policy keeps trying while the key is held, and takes over once the lease passes"
    )
    func consumerTransactionsWait() async throws {
        let directory = TemporaryDirectory()
        let clock = ObservedClock()
        let store = try SQLiteDedupStore(
            path: directory.file(),
            configuration: .init(clock: clock),
            logger: quietLogger
        )
        var configuration = ConsumerConfiguration()
        configuration.inFlightPolicy = .wait(timeout: .seconds(60))
        let consumer = try IdempotentConsumer(
            store: store,
            namespace: "orders",
            configuration: configuration,
            logger: quietLogger
        )
        let holder = try #require(try await store.claim(request("w-1", lease: .seconds(10))).lease)
        let readsBefore = clock.reads
        async let waited = consumer.processInTransaction(key: "w-1") { _, context in
            #expect(context.fencingToken == holder.fencingToken + 1)
        }
        // Its first claim has read the clock, so it found the lease live; only then does it pass.
        await clock.waitForRead(after: readsBefore)
        clock.base.advance(by: .seconds(10))
        #expect(try await waited == .applied)
        await expectDedupError(.leaseLost) {
            try await store.complete(Completion(lease: holder, retention: .seconds(60)))
        }
    }

    @Test("a mismatched fingerprint is reported and nothing runs")
    func mismatch() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        _ = try await store.withTransactionalClaim(request("fp", fingerprint: "a"), retention: .seconds(3600)) { _, _ in
            nil
        }
        let outcome = try await store.withTransactionalClaim(request("fp", fingerprint: "b"), retention: .seconds(3600))
        { _, _ in
            Issue.record("ran on a mismatch")
            return nil
        }
        guard case .payloadMismatch(let record) = outcome else {
            Issue.record("expected payloadMismatch, got \(outcome)")
            return
        }
        #expect(record.fingerprint == "a")
    }

    @Test("values of every SQLite type round-trip through the handle, NUL in text included")
    func values() async throws {
        let fixture = StoreFixture()
        let store = try await store(fixture)
        _ = try await store.withTransactionalClaim(request("values"), retention: .seconds(1)) { tx, _ in
            let rows = try tx.query(
                "SELECT ?1 AS i, ?2 AS r, ?3 AS t, ?4 AS b, ?5 AS n",
                7,
                1.5,
                .text("a\u{0}b"),
                .blob(Data([0, 255])),
                nil
            )
            #expect(rows.count == 1)
            #expect(rows[0].columns == ["i", "r", "t", "b", "n"])
            #expect(rows[0].values == [7, 1.5, .text("a\u{0}b"), .blob(Data([0, 255])), .null])
            #expect(throws: DedupError.self) { try tx.query("SELECT ?", [1, 2]) }
            return nil
        }
    }
}

/// A manual clock that tells when it has been read: a test waits for a claim to have looked at the
/// time before moving it.
final class ObservedClock: DedupClock {
    let base = ManualDedupClock()
    private let state = Mutex<(reads: Int, waiters: [(after: Int, continuation: CheckedContinuation<Void, Never>)])>(
        (0, [])
    )

    func nowMilliseconds() -> Int64 {
        // Read first, then tell: whoever waited for this read may move the clock at once.
        let now = base.nowMilliseconds()
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.reads += 1
            let reads = state.reads
            let ready = state.waiters.filter { reads > $0.after }.map(\.continuation)
            state.waiters.removeAll { reads > $0.after }
            return ready
        }
        for continuation in ready { continuation.resume() }
        return now
    }

    /// How many times the clock has been read.
    var reads: Int { state.withLock { $0.reads } }

    /// Returns once the clock has been read more than `count` times.
    func waitForRead(after count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.reads > count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }
}
