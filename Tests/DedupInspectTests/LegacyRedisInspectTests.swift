import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

/// `dedup-inspect` on a Redis store filled by the release before the compact value layout.
@Suite("dedup-inspect on records of the previous Redis value layout")
struct LegacyRedisInspectTests {
    @Test(
        "show, list and stats give every field of completed and in-flight records of the previous layout; reset selects them by broker time"
    )
    func previousLayout() async throws {
        try await withRedisServer { server in
            let location = server.url(password: nil)
            try await server.setLegacy(.completedBrokerFingerprintResult, at: "dedup:6:legacy:broker")
            try await server.setLegacy(.completedPlain, at: "dedup:6:legacy:plain")
            try await server.setLegacy(.inFlightTakenOver, at: "dedup:6:legacy:flying")

            let show = try await InspectBinary.run([
                "show", "--store", location, "--namespace", "legacy", "broker", "--format", "json",
            ])
            #expect(show.status == 0, "\(show.stderr)")
            let record = try #require(try show.json().object("record"))
            #expect(
                record.string("state") == "completed" && record.int("fencing_token") == 1 && record.int("attempt") == 1
            )
            #expect(
                record.int("created_at_ms") == 1_796_592_678_033 && record.int("completed_at_ms") == 1_796_592_678_121
            )
            #expect(record.int("expires_at_ms") == Int(1_796_592_678_121 + LegacyRedisRecord.retentionMilliseconds))
            #expect(record.int("broker_time_ms") == 1_600_000_000_123 && record.string("fingerprint") == "fp 42")
            #expect(
                record.int("result_size") == 7
                    && record.string("result_base64") == Data([0, 1, 2, 255, 32, 10, 45]).base64EncodedString()
            )

            let flying = try await InspectBinary.run(["show", "--store", location, "--namespace", "legacy", "flying"])
            #expect(flying.status == 0, "\(flying.stderr)")
            #expect(
                flying.stdout.contains("pod-b")
                    && flying.stdout.contains(LegacyRedisRecord.inFlightTakenOver.ownerToken!),
                "\(flying.stdout)"
            )

            let list = try await InspectBinary.run([
                "list", "--store", location, "--namespace", "legacy", "--format", "json",
            ])
            let states = Dictionary(
                uniqueKeysWithValues: try list.json().objects("records").map {
                    ($0.string("key")!, $0.string("state")!)
                }
            )
            #expect(states == ["broker": "completed", "plain": "completed", "flying": "in_flight"])
            let stats = try await InspectBinary.run(["stats", "--store", location, "--format", "json"])
            #expect(try stats.json().int("total") == 3)

            // [2020-09-13 12:26:40, +1 s): the broker time of one completed record.
            let range = ["--from", "1600000000000ms", "--until", "1600000001000ms"]
            let reset = try await InspectBinary.run(
                ["reset", "--store", location, "--namespace", "legacy", "--yes", "--format", "json"] + range
            )
            #expect(reset.status == 0, "\(reset.stderr)")
            #expect(try reset.json().int("deleted") == 1)
            #expect(try await server.cli("EXISTS", "dedup:6:legacy:broker") == "0")
            #expect(try await server.cli("EXISTS", "dedup:6:legacy:plain") == "1")
        }
    }
}
