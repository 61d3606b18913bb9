import CoreMetrics

/// The consumer's metrics, created once so the hot path only increments (labels under `dedup.`).
struct ConsumerMetrics: Sendable {
    let acquired: Counter
    let takeover: Counter
    let duplicate: Counter
    let inFlight: Counter
    let payloadMismatch: Counter
    let handlerFailures: Counter
    let leaseRenewals: Counter
    let leaseLosses: Counter
    let cacheHits: Counter
    let bypassed: Counter
    let completionRetries: Counter
    let claimDuration: Timer
    let completeDuration: Timer
    private let namespace: String
    private let factory: any MetricsFactory

    init(namespace: String, factory: any MetricsFactory) {
        self.namespace = namespace
        self.factory = factory
        func claims(_ outcome: String) -> Counter {
            Counter(label: "dedup.claims", dimensions: [("namespace", namespace), ("outcome", outcome)], factory: factory)
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
            label: "dedup.store.duration", dimensions: [("namespace", namespace), ("operation", "claim")], factory: factory
        )
        completeDuration = Timer(
            label: "dedup.store.duration", dimensions: [("namespace", namespace), ("operation", "complete")],
            factory: factory
        )
    }

    /// Counts a store error by its code (errors are rare, so the counter is made on demand).
    func storeError(_ error: any Error) {
        let code = (error as? DedupError)?.code.description ?? "unknown"
        Counter(label: "dedup.store.errors", dimensions: [("namespace", namespace), ("code", code)], factory: factory)
            .increment()
    }
}
