import Dedup
import DedupTestKit
import Foundation
import Testing

/// A lease lost because its renewals failed keeps the store's error for them as the lost-lease
/// error's underlying error. On the real clock: a renewal round must run, and fail, within the
/// lease (one second, renewed every 50 ms).
@Suite("A lost lease keeps its renewal failure")
struct LeaseLossCauseTimingTests {
    /// A consumer whose store throws `renewalFailure` for every renewal.
    func consumer(
        renewalsFailingWith renewalFailure: DedupError
    ) throws -> (FaultInjectingDedupStore, IdempotentConsumer) {
        let store = FaultInjectingDedupStore(InMemoryDedupStore(clock: ManualDedupClock()))
        store.fail(.renew, with: renewalFailure)
        var configuration = ConsumerConfiguration()
        configuration.lease = .seconds(1)
        configuration.renewalInterval = .milliseconds(50)
        return (store, try IdempotentConsumer(store: store, namespace: "orders", configuration: configuration))
    }

    @Test(
        "a lease lost after its renewals failed keeps the renewal's store error, in the handler and in the consumer's error"
    )
    func leaseLostKeepsRenewalFailure() async throws {
        let renewalFailure = DedupError(.storeUnavailable, "the store is down for renewals")
        let (store, consumer) = try consumer(renewalsFailingWith: renewalFailure)
        var inHandler: DedupError?
        let error = await #expect(throws: DedupError.self) {
            try await consumer.process(key: "m-1") { context in
                do {
                    // Returns once the lease is lost: its end passes with every renewal failing.
                    try await context.cancellingOnLeaseLoss { try await Task.sleep(for: .seconds(60)) }
                } catch let error as DedupError {
                    inHandler = error
                }
            }
        }
        #expect(error?.code == .leaseLost)
        #expect(store.calls(.renew) > 0)
        #expect(inHandler?.code == .leaseLost)
        #expect(
            inHandler?.underlyingError as? DedupError == renewalFailure,
            "\(String(describing: inHandler?.underlyingError))"
        )
        #expect(
            error?.underlyingError as? DedupError == renewalFailure,
            "\(String(describing: error?.underlyingError))"
        )
    }

    @Test("a batch lease lost before its handler's turn keeps the renewal's store error")
    func batchLeaseLostKeepsRenewalFailure() async throws {
        let renewalFailure = DedupError(.timeout, "renewals time out")
        let (store, consumer) = try consumer(renewalsFailingWith: renewalFailure)
        let results = try await consumer.processBatch(["m-1", "m-2"], keyStrategy: .messageID { $0 }) {
            message,
            context in
            // The first handler outlasts every lease of the batch.
            if message == "m-1" {
                _ = try? await context.cancellingOnLeaseLoss { try await Task.sleep(for: .seconds(60)) }
            }
        }
        guard case .failure(let failure) = results[1], let error = failure as? DedupError else {
            Issue.record("expected the second message to fail, got \(results[1])")
            return
        }
        #expect(error.code == .leaseLost)
        #expect(store.calls(.renew) > 0)
        #expect(error.underlyingError as? DedupError == renewalFailure, "\(String(describing: error.underlyingError))")
    }
}
