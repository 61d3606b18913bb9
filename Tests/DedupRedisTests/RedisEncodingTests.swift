import Dedup
import Foundation
import Testing

@testable import DedupRedis

/// What the Redis store writes and reads, checked without a server: the commands it encodes in one
/// pass, the record values they carry and how those decode, how error replies map to codes, and
/// the SHA-1 that names the scripts. (The store connects on first use, so making one needs no
/// server; the integration tests check the same layout on a real one.)
@Suite("Redis encoding and decoding, without a server")
struct RedisEncodingTests {
    let store = try! RedisDedupStore(url: "redis://:s3cret@127.0.0.1:1/0")
    let id = try! RecordID(namespace: "orders-group", key: "order-42")
    let token = "0123456789abcdef0123456789abcdef"
    let header = "in_flight 11:web 7:31337 32:0123456789abcdef0123456789abcdef "

    var request: ClaimRequest {
        ClaimRequest(
            id: id,
            ownerToken: token,
            lease: .seconds(30),
            retention: .seconds(3600),
            fingerprint: "fp-1",
            ownerLabel: "web 7:31337",
            brokerTime: Date(millisecondsSince1970: 1_700_000_000_123)
        )
    }

    /// A command's arguments as a server reads them off the wire (through hiredis's reader), as
    /// text; compared as `String`s, canonically equivalent texts are equal.
    func arguments(_ command: RedisCommand) throws -> [String] {
        try argumentBytes(command).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A command's arguments as a server reads them off the wire, byte for byte.
    func argumentBytes(_ command: RedisCommand) throws -> [[UInt8]] {
        var wire: [UInt8] = []
        command.write(to: &wire)
        guard case .array(let parts) = try readReplies(wire, count: 1)[0] else {
            Issue.record("a command is not a RESP array")
            return []
        }
        return parts.map { $0.bytesValue ?? [] }
    }

    @Test("a command goes on the wire as a RESP array of bulk strings, binary arguments and integers included")
    func commandEncoding() throws {
        var command = RedisCommand("SET", "k")
        command.append([UInt8(ascii: "a"), 0, UInt8(ascii: "b")])
        command.append(Int64(-42))
        var wire: [UInt8] = []
        command.write(to: &wire)
        #expect(wire == Array("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n$3\r\n-42\r\n".utf8))
        #expect(command.name == "SET")
    }

    @Test("a claim is TIME, then SET <key> <new in-flight value> NX PX <lease + retention - 1> GET")
    func claimCommand() throws {
        var pieces = CommandPieces()
        let commands = try store.fastClaimCommands([request], &pieces)
        #expect(commands.count == 2)
        #expect(try arguments(commands[0]) == ["TIME"])
        // Lease span and retention as whole units, the broker time in base 36 (1700000000123 ms),
        // the fingerprint; fencing and attempt 1 go without saying.
        let expectedValue = header + "30s 1h bloyw3v5n p4:fp-1"
        #expect(
            try arguments(commands[1]) == [
                "SET", "dedup:12:orders-group:order-42", expectedValue, "NX", "PX", "3629999", "GET",
            ]
        )
        // The claim script's call carries the same new value, then the owner header alone.
        let scripted = try arguments(store.scriptClaimCommand(request, pieces.ownerHeaderStart(request.ownerLabel)))
        #expect(
            scripted == [
                "EVALSHA", RedisScript.claim.sha, "1", "dedup:12:orders-group:order-42", expectedValue, header, "30000",
                "1h", "4:fp-1",
            ]
        )
    }

    @Test("claims under more labels, leases and retentions than the store keeps encoded each carry their own")
    func piecesKeptPerLabel() throws {
        var pieces = CommandPieces()
        for round in 0..<3 {
            for (index, label) in ["a", "bb", "é", "e\u{301}", "host:1"].enumerated() {
                var claim = request
                claim.ownerLabel = label
                claim.lease = .seconds(Int64(10 + index))
                claim.retention = .seconds(Int64(100 + round))
                claim.brokerTime = nil
                claim.fingerprint = nil
                let lease = (10 + index) * 1000
                let retention = (100 + round) * 1000
                let value = "in_flight \(label.utf8.count):\(label) 32:\(token) \(lease / 1000)s \(retention / 1000)s"
                // Byte for byte: "é" and "e\u{301}" are equal as `String`s, not as labels.
                #expect(
                    try argumentBytes(store.fastClaimCommands([claim], &pieces)[1])
                        == [
                            "SET", "dedup:12:orders-group:order-42", value, "NX", "PX", "\(lease + retention - 1)",
                            "GET",
                        ].map { Array($0.utf8) }
                )
            }
        }
    }

    @Test("an owner label that may not claim is refused before any command is written")
    func invalidLabel() {
        var pieces = CommandPieces()
        var unlabelled = request
        unlabelled.ownerLabel = ""
        #expect(throws: DedupError.self) { try store.fastClaimCommands([unlabelled], &pieces) }
    }

    @Test("the value a claim writes decodes to the claimed record, its times hung off the key's expiry")
    func claimedValueDecodes() throws {
        var pieces = CommandPieces()
        let value = try #require(try arguments(store.fastClaimCommands([request], &pieces)[1]).dropFirst(2).first)
        let created: Int64 = 1_700_000_500_000
        let expires = created + 30_000 + 3_600_000
        let record = try #require(RecordValue.decode(Array(value.utf8), id: id, expiresMilliseconds: expires))
        #expect(
            record
                == DedupRecord(
                    id: id,
                    state: .inFlight,
                    ownerToken: token,
                    fencingToken: 1,
                    attempt: 1,
                    createdMilliseconds: created,
                    leaseUntilMilliseconds: created + 30_000,
                    completedMilliseconds: nil,
                    expiresMilliseconds: expires,
                    fingerprint: "fp-1",
                    result: nil,
                    ownerLabel: "web 7:31337",
                    brokerMilliseconds: 1_700_000_000_123
                )
        )
    }

    @Test(
        "a batch of completions is one call of the completion script: the keys, the retention, then header, result and first claim of each"
    )
    func completionCommand() throws {
        let lease = request.lease(claimedAt: 1_700_000_500_000)
        // A lease rebuilt by hand, with neither a label nor a first claim time.
        var unlabelled = lease
        unlabelled.ownerLabel = nil
        unlabelled.claimedAt = nil
        let completions = [
            Completion(lease: lease, retention: .seconds(60), result: Data([0x61, 0, 0x62])),
            Completion(lease: unlabelled, retention: .seconds(60)),
        ]
        var pieces = CommandPieces()
        let command = completions.withUnsafeBufferPointer { store.completeCommand($0, &pieces) }
        #expect(
            try arguments(command) == [
                "EVALSHA", RedisScript.complete.sha, "2", "dedup:12:orders-group:order-42",
                "dedup:12:orders-group:order-42", "60000", "1m",
                // The first claim in base 36: 1700000500000 ms.
                header, " r3:a\0b", "loywekv4",
                // No label (`-`), no result, no first claim: the script reads it from the value.
                "in_flight - 32:\(token) ", "", "",
            ]
        )
    }

    @Test(
        "a completed value dates itself: first claim in base 36, completion after it, retention, broker time before it"
    )
    func compactCompletedValueDecodes() throws {
        // First claim 1000 ms ("rs" in base 36), completed 1000 ms later, kept 500 ms, broker time
        // 995 ms before the first claim, fencing 2, attempt 3, a binary result.
        let value = Array("done rs 1000 500 b995 f2 a3 r3:a\0b".utf8)
        #expect(RecordValue.isCompleted(value) && !RecordValue.isInFlight(value))
        let record = try #require(RecordValue.decode(value, id: id, expiresMilliseconds: nil))
        #expect(
            record
                == DedupRecord(
                    id: id,
                    state: .completed,
                    ownerToken: nil,
                    fencingToken: 2,
                    attempt: 3,
                    createdMilliseconds: 1000,
                    leaseUntilMilliseconds: nil,
                    completedMilliseconds: 2000,
                    expiresMilliseconds: 2500,
                    fingerprint: nil,
                    result: Data([0x61, 0, 0x62]),
                    ownerLabel: nil,
                    brokerMilliseconds: 5
                )
        )
    }

    @Test("a completed value of the earlier layout decodes with its own times and binary result")
    func completedValueDecodes() throws {
        let value = Array(
            "completed b=5 fencing=2 attempt=3 lease_span_ms=30000 retention_ms=3600000 fp=- created_ms=1000 completed_ms=2000 kept_ms=500 result=3:a\0b"
                .utf8
        )
        #expect(RecordValue.isCompleted(value) && !RecordValue.isInFlight(value))
        let record = try #require(RecordValue.decode(value, id: id, expiresMilliseconds: nil))
        #expect(
            record
                == DedupRecord(
                    id: id,
                    state: .completed,
                    ownerToken: nil,
                    fencingToken: 2,
                    attempt: 3,
                    createdMilliseconds: 1000,
                    leaseUntilMilliseconds: nil,
                    completedMilliseconds: 2000,
                    expiresMilliseconds: 2500,
                    fingerprint: nil,
                    result: Data([0x61, 0, 0x62]),
                    ownerLabel: nil,
                    brokerMilliseconds: 5
                )
        )
    }

    @Test("an in-flight value written before labels were kept reads with no label")
    func unlabelledValueDecodes() throws {
        let record = try #require(
            RecordValue.decode(
                Array("in_flight owner=3:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=-".utf8),
                id: id,
                expiresMilliseconds: 100
            )
        )
        #expect(record.ownerLabel == nil && record.ownerToken == "abc" && record.brokerTime == nil)
        #expect(record.leaseUntil?.millisecondsSince1970 == 80 && record.createdAt.millisecondsSince1970 == 70)
    }

    @Test(
        "a value that is not a record decodes to nil",
        arguments: [
            ("someone else's", Int64?(100)),
            ("in_flight owner=3:abc fencing=x attempt=1 lease_span_ms=10 retention_ms=20 fp=-", 100),
            ("in_flight owner=99:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=-", 100),
            ("in_flight owner=3:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=- extra", 100),
            ("in_flight owner=3:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=-", nil),
            (
                "in_flight owner=3:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=-",
                RecordValue.latestExpiry + 1
            ),
            ("in_flight label=5:ab owner=3:abc fencing=1 attempt=1 lease_span_ms=10 retention_ms=20 fp=-", 100),
            ("completed fencing=1 attempt=1", nil),
            (
                "completed b=x fencing=1 attempt=1 lease_span_ms=1 retention_ms=1 fp=- created_ms=1 completed_ms=2 kept_ms=3 result=-",
                nil
            ),
        ]
    )
    func notARecord(value: String, expires: Int64?) {
        #expect(RecordValue.decode(Array(value.utf8), id: id, expiresMilliseconds: expires) == nil)
    }

    @Test(
        "an error reply maps to the most specific code, keeping the server's text and never the password",
        arguments: [
            ("WRONGPASS invalid username-password pair or user is disabled.", DedupError.Code.authenticationFailed),
            ("NOAUTH Authentication required.", .authenticationFailed),
            ("NOPERM User reader has no permissions to run the 'set' command", .authenticationFailed),
            ("ERR AUTH <password> called without any password configured for the default user.", .authenticationFailed),
            ("WRONGTYPE Operation against a key holding the wrong kind of value", .wrongType),
            ("READONLY You can't write against a read only replica.", .readOnly),
            ("OOM command not allowed when used memory > 'maxmemory'.", .outOfMemory),
            ("LOADING Redis is loading the dataset in memory", .storeUnavailable),
            ("BUSY Redis is busy running a script.", .storeUnavailable),
            ("MASTERDOWN Link with MASTER is down", .storeUnavailable),
            ("TRYAGAIN Multiple keys request during rehashing of slot", .storeUnavailable),
            ("CLUSTERDOWN The cluster is down", .storeUnavailable),
            ("DEDUPCORRUPT the value at dedup:2:ns:k is not a dedup record", .corruptStore),
            ("ERR unknown command 'FOO'", .storeError),
        ]
    )
    func errorReplies(text: String, code: DedupError.Code) {
        let error = DedupError.fromServer(text, endpoint: store.endpoint)
        #expect(error.code == code)
        #expect(error.redisErrorText == text)
        #expect(error.message.contains("127.0.0.1") && !error.message.contains("s3cret"), "\(error.message)")
    }

    @Test("SHA-1 gives the standard digests, across block boundaries, so each script's EVALSHA name is the server's")
    func sha1() throws {
        let alphabet = { (count: Int) in (0..<count).map { UInt8(ascii: "a") + UInt8($0 % 26) } }
        #expect(SHA1.hexDigest([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hexDigest(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1.hexDigest(alphabet(55)) == "a617d006d1ca12671785098a19a87fe58443bde9")
        #expect(SHA1.hexDigest(alphabet(56)) == "4ad5bb7ae3c4024768d364b77c52128ea3cffebe")
        #expect(SHA1.hexDigest(alphabet(64)) == "93249d4c2f8903ebf41ac358473148ae6ddd7042")
        #expect(
            SHA1.hexDigest([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        )
        for script in RedisScript.all {
            #expect(script.sha == SHA1.hexDigest(Array(script.source.utf8)))
            #expect(try arguments(script.callPrefix) == ["EVALSHA", script.sha, "1"])
        }
    }

    @Test("a SCAN pattern escapes every glob character of a key prefix or namespace")
    func globEscape() {
        #expect(RedisDedupStore.globEscape(Array("a*b?[c]\\^-z".utf8)) == Array("a\\*b\\?\\[c\\]\\\\\\^\\-z".utf8))
    }
}

extension ClaimRequest {
    /// The lease a store answering this claim with a fresh acquisition gives.
    fileprivate func lease(claimedAt milliseconds: Int64) -> Lease {
        Lease(
            id: id,
            ownerToken: ownerToken,
            fencingToken: 1,
            attempt: 1,
            leaseUntil: Date(millisecondsSince1970: milliseconds + lease.wholeMilliseconds),
            isTakeover: false,
            claimedAt: Date(millisecondsSince1970: milliseconds),
            ownerLabel: ownerLabel
        )
    }
}
