// A handler that returns a value: the value is stored with the completion, and a duplicate gets
// it back instead of running the handler again.

import Dedup
// snippet.hide
import DedupTestKit

// snippet.show

// snippet.receipt
struct Receipt: Codable, Sendable {
    var chargeID: String
    var cents: Int64
}
// snippet.end

// snippet.hide
struct Order: Sendable {
    var id: String
    var cents: Int64
}

struct Message: Sendable {
    var id: String
    var order: Order
}

struct Payments {
    func charge(_ order: Order, fencingToken: Int64) async throws -> Receipt {
        Receipt(chargeID: "ch_\(order.id)", cents: order.cents)
    }
}

let payments = Payments()
let consumer = try IdempotentConsumer(store: InMemoryDedupStore(), namespace: "billing-consumer-group")
let message = Message(id: "msg-1", order: Order(id: "order-7", cents: 1250))
// The same message twice: applied, then a duplicate that gets the stored receipt.
for _ in 1...2 {
    // snippet.show

    // snippet.returning
    let result = try await consumer.process(key: message.id, returning: Receipt.self) { context in
        try await payments.charge(message.order, fencingToken: context.fencingToken)
    }
    if case .duplicate = result.outcome {
        // The handler did not run: this is the receipt stored by the run that did.
        print("already charged: \(result.value?.chargeID ?? "no receipt stored")")
    } else if let receipt = result.value {
        print("charged: \(receipt.chargeID)")
    }
    // snippet.end
    // snippet.hide
}
