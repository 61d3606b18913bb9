import CoreMetrics

/// The consumer's metrics, created once so the hot path only increments (labels under `dedup.`).
package struct ConsumerMetrics: Sendable {
    package let acquired: Counter
    package let takeover: Counter
    package let duplicate: Counter
    package let inFlight: Counter
    package let payloadMismatch: Counter
    package let handlerFailures: Counter
    package let leaseRenewals: Counter
    package let leaseLosses: Counter
    package let cacheHits: Counter
    package let bypassed: Counter
    package let completionRetries: Counter
    package let claimDuration: Timer
    package let completeDuration: Timer
    private let namespace: String
    private let factory: any MetricsFactory

    init(namespace: String, factory: any MetricsFactory) {
        self.namespace = namespace
        self.factory = factory
        func claims(_ outcome: String) -> Counter {
            Counter(
                label: "dedup.claims",
                dimensions: [("namespace", namespace), ("outcome", outcome)],
                factory: factory
            )
        }
        acquired = claims("acquired")
        takeover = claims("takeover")
        duplicate = claims("duplicate")
        inFlight = claims("in_flight")
        payloadMismatch = claims("payload_mismatch")
        let dimensions = [("namespace", namespace)]
        handlerFailures = Counter(label: "dedup.handler.failures", dimensions: dimensions, factory: factory)
        leaseRenewals = Counter(label: "dedup.lease.renewals", dimensions: dimensions, factory: factory)
        leaseLosses = Counter(label: "dedup.lease.losses", dimensions: dimensions, factory: factory)
        cacheHits = Counter(label: "dedup.cache.hits", dimensions: dimensions, factory: factory)
        bypassed = Counter(label: "dedup.bypassed", dimensions: dimensions, factory: factory)
        completionRetries = Counter(label: "dedup.completion.retries", dimensions: dimensions, factory: factory)
        claimDuration = Timer(
            label: "dedup.store.duration",
            dimensions: [("namespace", namespace), ("operation", "claim")],
            factory: factory
        )
        completeDuration = Timer(
            label: "dedup.store.duration",
            dimensions: [("namespace", namespace), ("operation", "complete")],
            factory: factory
        )
    }

    /// A code's name in the style of the other dimension values (`storeUnavailable` →
    /// `store_unavailable`, as `in_flight`).
    static func snakeCased(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// Counts a store error by its code (errors are rare, so the counter is made on demand).
    package func storeError(_ error: any Error) {
        let code = (error as? DedupError).map { Self.snakeCased($0.code.description) } ?? "unknown"
        Counter(label: "dedup.store.errors", dimensions: [("namespace", namespace), ("code", code)], factory: factory)
            .increment()
    }
}
