import CoreMetrics

/// A stream consumer's metrics, labelled by stream and group: `dedup.stream.entries` counts
/// entries by `event` (`read`, `acked`, `reclaimed`, `dead_lettered`, `trimmed`) and
/// `dedup.stream.lag` is the group's lag as Redis reports it.
struct StreamMetrics: Sendable {
    let read: Counter
    let acked: Counter
    let reclaimed: Counter
    let deadLettered: Counter
    let trimmed: Counter
    let lag: Gauge

    init(stream: String, group: String, factory: any MetricsFactory) {
        func entries(_ event: String) -> Counter {
            Counter(
                label: "dedup.stream.entries",
                dimensions: [("stream", stream), ("group", group), ("event", event)],
                factory: factory
            )
        }
        read = entries("read")
        acked = entries("acked")
        reclaimed = entries("reclaimed")
        deadLettered = entries("dead_lettered")
        trimmed = entries("trimmed")
        lag = Gauge(label: "dedup.stream.lag", dimensions: [("stream", stream), ("group", group)], factory: factory)
    }
}
