// A long handler that keeps to its lease: the slow call is cancelled when the lease is lost, the
// steps check the lease between them, and the downstream write carries the fencing token.

import Dedup
// snippet.hide
import DedupTestKit

struct Order: Sendable {
    var id: String
    var cents: Int64
}

struct Message: Sendable {
    var id: String
    var order: Order
}

struct Pricing: Sendable {
    func quote(_ order: Order) async throws -> Int64 {
        try await Task.sleep(for: .milliseconds(10))
        return order.cents
    }
}

let pricing = Pricing()
let consumer = try IdempotentConsumer(store: InMemoryDedupStore(), namespace: "billing-consumer-group")
let message = Message(id: "msg-1", order: Order(id: "order-7", cents: 1250))
// snippet.show

// snippet.downstream
/// The downstream system: it remembers the highest fencing token that wrote each order and
/// refuses an older one, so a handler that outlived its lease cannot overwrite the run that
/// took the key over (in SQL: `UPDATE … WHERE order_id = ? AND fencing_token <= ?`).
actor Ledger {
    struct StaleWriter: Error {}
    private var postings: [String: (cents: Int64, fencingToken: Int64)] = [:]

    func post(_ order: Order, cents: Int64, fencingToken: Int64) throws {
        if let newer = postings[order.id]?.fencingToken, newer > fencingToken { throw StaleWriter() }
        postings[order.id] = (cents, fencingToken)
    }
}
// snippet.end

// snippet.hide
let ledger = Ledger()
// snippet.show

// snippet.handler
let outcome = try await consumer.process(key: message.id) { context in
    // A takeover: an earlier run's lease passed, and it may have done part of the work.
    if context.isTakeover { print("attempt \(context.attempt) of \(message.id)") }
    let cents = try await context.cancellingOnLeaseLoss {  // cancelled once the lease is lost
        try await pricing.quote(message.order)
    }
    try context.checkLease()  // between steps: stop rather than race the run that took over
    try await ledger.post(message.order, cents: cents, fencingToken: context.fencingToken)
}
// snippet.end

// snippet.hide
print(outcome)
