import ArgumentParser
import Dedup
import Foundation

/// `stats`: counts by state and namespace, how far back dedup covers, and who holds what in flight.
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Counts by namespace and state, the oldest and newest record, and the in-flight records.",
        discussion: """
            OLDEST is how far back deduplication covers: a replay from before it re-applies messages. \
            EXPIRED counts records past their expiry that are not deleted yet: treated as absent, not \
            in TOTAL, deleted by purge (always 0 on Redis, which expires records itself). The \
            in-flight list shows each lease's holder (its owner label, host:pid unless the consumer \
            names itself, and owner token) and the time left on it (by this host's clock), the longest \
            overdue first; a negative time left is an abandoned claim the next delivery will take over.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Only this namespace.")
    var namespace: String?

    @Option(help: "List at most this many in-flight records, the longest overdue first (0: none).")
    var inFlightLimit = 20

    func validate() throws {
        if inFlightLimit < 0 { throw ValidationError("--in-flight-limit must be 0 or more") }
    }

    func run() async throws {
        try await Session.run(global, opening: .readOnly) { session, store in
            let store = store!
            let now = session.now
            var stats = try await store.stats()
            var expired = try await StoreAccess.countExpired(in: store)
            if let namespace {
                stats.namespaces = stats.namespaces.filter { $0.namespace == namespace }
                expired = expired.filter { $0.key == namespace }
            }
            // A namespace whose records have all expired still has something for purge to delete.
            let onlyExpired = Set(expired.keys).subtracting(stats.namespaces.map(\.namespace))
            if !onlyExpired.isEmpty {
                stats.namespaces += onlyExpired.map {
                    DedupStats.NamespaceStats(
                        namespace: $0,
                        inFlight: 0,
                        expiredLeases: 0,
                        completed: 0,
                        oldest: nil,
                        newest: nil
                    )
                }
                stats.namespaces.sort { $0.namespace.utf8.lexicographicallyPrecedes($1.namespace.utf8) }
            }

            // Every in-flight record is read, page by page, keeping the longest overdue: an
            // abandoned claim must not hide behind live ones that sort before it by key.
            var overdue = OverdueFirst(limit: inFlightLimit)
            var inFlightTotal = 0
            var cursor: PageCursor?
            let filter = RecordFilter(namespace: namespace, state: .inFlight)
            while inFlightLimit > 0 {
                let page = try await store.records(matching: filter, after: cursor, limit: 1000)
                for record in page.records { overdue.offer(record) }
                inFlightTotal += page.records.count
                cursor = page.next
                if cursor == nil { break }
            }
            if inFlightLimit == 0 { inFlightTotal = stats.namespaces.reduce(0) { $0 + $1.inFlight } }
            let inFlight = overdue.records
            let more = inFlightTotal > inFlight.count

            if session.json {
                session.document(
                    json(stats, expired: expired, inFlight: inFlight, truncated: more, session: session, now: now)
                )
            } else {
                session.out.write(
                    text(
                        stats,
                        expired: expired,
                        inFlight: inFlight,
                        inFlightTotal: inFlightTotal,
                        session: session,
                        now: now
                    )
                )
            }
            return .success
        }
    }

    private func json(
        _ stats: DedupStats,
        expired: [String: Int],
        inFlight: [DedupRecord],
        truncated: Bool,
        session: Session,
        now: Int64
    ) -> JSONValue {
        let namespaces: [JSONValue] = stats.namespaces.map { entry in
            .object([
                ("namespace", .string(entry.namespace)),
                ("in_flight", .int(Int64(entry.inFlight))),
                ("expired_leases", .int(Int64(entry.expiredLeases))),
                ("completed", .int(Int64(entry.completed))),
                ("total", .int(Int64(entry.inFlight + entry.completed))),
                ("expired", .int(expired[entry.namespace] ?? 0)),
                ("oldest", .time(entry.oldest)),
                ("oldest_ms", .milliseconds(entry.oldest)),
                ("newest", .time(entry.newest)),
                ("newest_ms", .milliseconds(entry.newest)),
                ("oldest_broker_time", .time(entry.oldestBrokerTime)),
                ("oldest_broker_time_ms", .milliseconds(entry.oldestBrokerTime)),
                ("newest_broker_time", .time(entry.newestBrokerTime)),
                ("newest_broker_time_ms", .milliseconds(entry.newestBrokerTime)),
            ])
        }
        let oldest = stats.namespaces.compactMap(\.oldest).min()
        let newest = stats.namespaces.compactMap(\.newest).max()
        return .object([
            ("store", .string(session.location.description)),
            ("as_of", .string(Timestamp.format(milliseconds: now))),
            ("as_of_ms", .int(now)),
            ("total", .int(Int64(stats.total))),
            ("in_flight", .int(Int64(stats.namespaces.reduce(0) { $0 + $1.inFlight }))),
            ("completed", .int(Int64(stats.namespaces.reduce(0) { $0 + $1.completed }))),
            ("expired", .int(expired.values.reduce(0, +))),
            ("oldest", .time(oldest)),
            ("oldest_ms", .milliseconds(oldest)),
            ("newest", .time(newest)),
            ("newest_ms", .milliseconds(newest)),
            ("namespaces", .array(namespaces)),
            ("in_flight_records", .array(inFlight.map { RecordRendering.json($0, now: now, includeResult: false) })),
            ("in_flight_records_truncated", .bool(truncated)),
        ])
    }

    private func text(
        _ stats: DedupStats,
        expired: [String: Int],
        inFlight: [DedupRecord],
        inFlightTotal: Int,
        session: Session,
        now: Int64
    ) -> String {
        var text = "store: \(session.location)   as of \(Timestamp.format(milliseconds: now))\n\n"
        guard !stats.namespaces.isEmpty else {
            return text + (namespace.map { "no records in namespace \(displayed($0))\n" } ?? "no records\n")
        }
        var table = TextTable(
            [
                "NAMESPACE", "IN_FLIGHT", "EXPIRED_LEASES", "COMPLETED", "TOTAL", "EXPIRED", "OLDEST", "NEWEST",
                "COVERS", "OLDEST_BROKER", "NEWEST_BROKER",
            ],
            rightAligned: [1, 2, 3, 4, 5]
        )
        func covers(_ oldest: Date?) -> String {
            oldest.map { humanDuration(milliseconds: now - $0.millisecondsSince1970) } ?? "-"
        }
        for entry in stats.namespaces {
            table.append([
                displayed(entry.namespace), grouped(entry.inFlight), grouped(entry.expiredLeases),
                grouped(entry.completed),
                grouped(entry.inFlight + entry.completed), grouped(expired[entry.namespace] ?? 0),
                entry.oldest.map(Timestamp.format) ?? "-",
                entry.newest.map(Timestamp.format) ?? "-", covers(entry.oldest),
                entry.oldestBrokerTime.map(Timestamp.format) ?? "-",
                entry.newestBrokerTime.map(Timestamp.format) ?? "-",
            ])
        }
        if stats.namespaces.count > 1 {
            let oldest = stats.namespaces.compactMap(\.oldest).min()
            table.append([
                "(all)", grouped(stats.namespaces.reduce(0) { $0 + $1.inFlight }),
                grouped(stats.namespaces.reduce(0) { $0 + $1.expiredLeases }),
                grouped(stats.namespaces.reduce(0) { $0 + $1.completed }), grouped(stats.total),
                grouped(expired.values.reduce(0, +)),
                oldest.map(Timestamp.format) ?? "-",
                stats.namespaces.compactMap(\.newest).max().map(Timestamp.format) ?? "-", covers(oldest),
                stats.namespaces.compactMap(\.oldestBrokerTime).min().map(Timestamp.format) ?? "-",
                stats.namespaces.compactMap(\.newestBrokerTime).max().map(Timestamp.format) ?? "-",
            ])
        }
        text += table.render()
        if expired.values.contains(where: { $0 > 0 }) {
            text +=
                "(EXPIRED: past their expiry, treated as absent and not in TOTAL; dedup-inspect purge --yes deletes them)\n"
        }
        if inFlightTotal > 0 && inFlightLimit > 0 {
            text += "\nin flight (\(inFlight.count) of \(grouped(inFlightTotal)) shown, longest overdue first):\n"
            var leases = TextTable(
                ["OWNER_LABEL", "OWNER_TOKEN", "FENCING", "ATTEMPT", "LEASE_LEFT", "LEASE_UNTIL", "NAMESPACE", "KEY"],
                rightAligned: [2, 3, 4]
            )
            for record in inFlight {
                let left = record.leaseUntil.map { $0.millisecondsSince1970 - now }
                leases.append([
                    record.ownerLabel.map(displayed) ?? "-", record.ownerToken ?? "-", String(record.fencingToken),
                    String(record.attempt),
                    left.map {
                        $0 >= 0 ? humanDuration(milliseconds: $0) : "expired \(humanDuration(milliseconds: -$0)) ago"
                    } ?? "-",
                    record.leaseUntil.map(Timestamp.format) ?? "-", displayed(record.id.namespace),
                    displayed(record.id.key),
                ])
            }
            text += leases.render()
        }
        return text
    }
}

/// The in-flight records whose leases end first (the longest overdue), at most `limit`, chosen
/// from any number offered one at a time in memory for `limit` records.
struct OverdueFirst {
    let limit: Int
    /// Ordered by lease end, then identity; never longer than `limit`.
    private(set) var records: [DedupRecord] = []

    init(limit: Int) {
        self.limit = limit
    }

    mutating func offer(_ record: DedupRecord) {
        guard limit > 0 else { return }
        if records.count == limit, let last = records.last, !Self.precedes(record, last) { return }
        var low = 0
        var high = records.count
        while low < high {
            let middle = (low + high) / 2
            if Self.precedes(records[middle], record) { low = middle + 1 } else { high = middle }
        }
        records.insert(record, at: low)
        if records.count > limit { records.removeLast() }
    }

    /// Earlier lease end first (a record without one last), then ``RecordID`` order.
    private static func precedes(_ lhs: DedupRecord, _ rhs: DedupRecord) -> Bool {
        let left = lhs.leaseUntil ?? .distantFuture
        let right = rhs.leaseUntil ?? .distantFuture
        return left != right ? left < right : lhs.id < rhs.id
    }
}
