import Foundation

extension ClaimRequest {
    /// The latest broker time a claim may carry, in Unix milliseconds (10^14, in the year 5138):
    /// every store keeps broker times as non-negative whole milliseconds, and Redis's scripts compute
    /// in doubles, exact only below that.
    public static let latestBrokerMilliseconds: Int64 = 100_000_000_000_000

    /// ``brokerTime`` in Unix milliseconds (rounded to the nearest), as stores keep it.
    public var brokerMilliseconds: Int64? { brokerTime?.millisecondsSince1970 }

    /// Checks a broker time: from the Unix epoch up to ``latestBrokerMilliseconds``, or none.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for a broker time before 1970 or after
    ///   ``latestBrokerMilliseconds`` (or not a number), before any store is touched.
    public static func validate(brokerTime: Date?) throws(DedupError) {
        guard let brokerTime else { return }
        let seconds = brokerTime.timeIntervalSince1970
        guard seconds.isFinite, seconds >= 0, seconds * 1000 <= Double(latestBrokerMilliseconds) else {
            throw DedupError(
                .invalidConfiguration,
                "the broker time \(brokerTime) is out of range: it must lie between 1970 and the year 5138"
            )
        }
    }
}
