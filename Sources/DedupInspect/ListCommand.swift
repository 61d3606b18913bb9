import ArgumentParser
import Dedup
import Foundation

/// `list`: records matching a filter, streamed page by page so a million records cost the memory
/// of one page.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List records, filtered by namespace, state, time range and key prefix.",
        discussion: """
            Records come in the store's order (SQLite: namespace, then key; Redis: scan order). With \
            --limit, at most that many are printed, followed by the cursor to pass to --cursor for the \
            next page; paging is stable while the store is written to (a record added or removed \
            meanwhile may or may not appear, nothing else is skipped or repeated). Without --limit every \
            matching record is printed, streamed page by page.

            The text table's TIME is the completion time, or the claim time while in flight; \
            BROKER_TIME is when the broker took the message ("-" when the consumer gave none). \
            --from/--until select by the broker time where a record carries one, by TIME otherwise. JSON is \
            one document: {"records":[...],"count":N,"next_cursor":"..."|null}.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filterOptions: FilterOptions

    @Option(help: "Print at most this many records, then the cursor to continue from.")
    var limit: Int?

    @Option(help: ArgumentHelp("Continue after this cursor (printed by an earlier list --limit).", valueName: "cursor"))
    var cursor: String?

    @Option(help: "Records fetched from the store per round trip.")
    var batchSize = 1000

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if batchSize < 1 || batchSize > 100_000 { throw ValidationError("--batch-size must be between 1 and 100000") }
        if let cursor, cursor.isEmpty { throw ValidationError("--cursor must not be empty") }
    }

    func run() async throws {
        try await Session.run(global, opening: .readOnly) { session, store in
            let store = store!
            let filter = filterOptions.filter
            let progress = ProgressLine(mode: global.progress, verb: "listed")
            let out = session.out
            let now = session.now
            var position = cursor.map(PageCursor.init(token:))
            var count = 0
            var widths: [Int]?

            if session.json {
                out.write("{\"records\":[")
                session.onError = { error, status in
                    out.write("],\"count\":\(count),\"next_cursor\":null,\"error\":")
                    out.line(Session.errorObject(error, status: status).rendered + "}")
                }
            }
            defer { progress.finish() }
            while !out.readerGone {
                let want = limit.map { min(batchSize, $0 - count) } ?? batchSize
                if want == 0 { break }
                let page = try await Self.page(
                    of: store,
                    filter,
                    after: position,
                    limit: want,
                    given: count == 0 ? cursor : nil
                )
                position = page.next
                if session.json {
                    var chunk = ""
                    for record in page.records {
                        if count > 0 || !chunk.isEmpty { chunk += "," }
                        RecordRendering.json(record, now: now, includeResult: false).render(into: &chunk)
                    }
                    out.write(chunk)
                } else if !page.records.isEmpty {
                    var table = TextTable(RecordRendering.listHeaders, rightAligned: RecordRendering.listRightAligned)
                    for record in page.records { table.append(RecordRendering.listRow(record)) }
                    // Widths come from the first page and stay, so the table lines up without
                    // holding every row; a wider namespace later just pushes its key to the right.
                    let first = widths == nil
                    if first {
                        var measured = table.widths()
                        measured[3] = 24
                        measured[4] = 24
                        widths = measured
                    }
                    out.write(table.render(widths: widths, header: first))
                }
                count += page.records.count
                progress.update(count)
                if position == nil { break }
            }
            session.onError = nil
            let next = limit != nil ? position : nil
            if session.json {
                out.write("],\"count\":\(count),\"next_cursor\":")
                out.line(JSONValue.string(next?.token).rendered + "}")
            } else {
                if count == 0 { out.line("no matching records") }
                if let next {
                    out.line("")
                    out.line("next cursor: \(next.token)")
                    out.line("(more may follow: continue with --cursor '\(next.token)')")
                } else if count > 0 {
                    out.line("")
                    out.line(counted(count, "record"))
                }
            }
            return .success
        }
    }

    /// A page of records; a store's refusal of the cursor the operator gave (`given`) is reported
    /// as an invalid cursor, in words, with what to do.
    private static func page(
        of store: any DedupStore,
        _ filter: RecordFilter,
        after position: PageCursor?,
        limit: Int,
        given: String?
    ) async throws
        -> RecordPage
    {
        do {
            return try await store.records(matching: filter, after: position, limit: limit)
        } catch let error as DedupError where error.code == .invalidConfiguration {
            guard let given else { throw error }
            throw DedupError(
                .invalidConfiguration,
                "invalid cursor \(given.debugDescription) (\(error.message)): pass the cursor an earlier list --limit printed for this store, or leave --cursor out to start from the beginning"
            )
        }
    }
}
