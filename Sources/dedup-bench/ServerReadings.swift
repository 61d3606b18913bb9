// What the benchmark reads from redis-server itself: its CPU time and memory (INFO), and the
// loopback round trip a client sees (PING). Read over a plain socket of their own, outside the
// timed part of every pass.
import Dedup
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One blocking connection to redis-server for the benchmark's own readings: INFO, PING, DBSIZE.
/// Not a client of the store: a few commands between passes, never during one.
final class ControlConnection {
    private let fd: Int32

    init(host: String, port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw BenchError("connect to \(host):\(port) failed")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Sends one command and returns its reply: the line of a status, integer or error reply, the
    /// bytes of a bulk string; `nil` for a null bulk string. An error reply throws.
    func call(_ arguments: [String]) throws -> [UInt8]? {
        var request = "*\(arguments.count)\r\n"
        for argument in arguments { request += "$\(argument.utf8.count)\r\n\(argument)\r\n" }
        try send(Array(request.utf8))
        return try readReply()
    }

    /// The fields of `INFO section`, `name:value` per line.
    func info(_ section: String) throws -> [String: String] {
        guard let text = try call(["INFO", section]) else { throw BenchError("INFO \(section) answered nil") }
        var fields: [String: String] = [:]
        for line in String(decoding: text, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    /// The server's CPU time so far, in seconds: `used_cpu_sys` + `used_cpu_user` of INFO cpu (the
    /// server process's own getrusage).
    func serverCPUSeconds() throws -> Double {
        let fields = try info("cpu")
        guard let system = fields["used_cpu_sys"].flatMap(Double.init),
            let user = fields["used_cpu_user"].flatMap(Double.init)
        else {
            throw BenchError("INFO cpu has no used_cpu_sys / used_cpu_user")
        }
        return system + user
    }

    /// `used_memory` of INFO memory, in bytes.
    func usedMemory() throws -> Int {
        guard let bytes = try info("memory")["used_memory"].flatMap(Int.init) else {
            throw BenchError("INFO memory has no used_memory")
        }
        return bytes
    }

    /// The number of keys in the selected database.
    func keyCount() throws -> Int {
        guard let reply = try call(["DBSIZE"]), let count = Int(String(decoding: reply, as: UTF8.self)) else {
            throw BenchError("DBSIZE gave no number")
        }
        return count
    }

    /// `count` PINGs one after another, each timed from before its send to after its reply: the
    /// loopback round trip as a client with one request at a time sees it.
    func pingRoundTrips(_ count: Int) throws -> LatencyRecorder {
        let ping = Array("*1\r\n$4\r\nPING\r\n".utf8)
        var recorder = LatencyRecorder(capacity: count)
        var buffer = [UInt8](repeating: 0, count: 64)
        for _ in 0..<count {
            let start = MonotonicInstant.now
            try send(ping)
            var received = 0
            // +PONG\r\n: 7 bytes.
            while received < 7 {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, $0.count - received, 0) }
                guard n > 0 else { throw BenchError("redis closed the connection") }
                received += n
            }
            recorder.record(MonotonicInstant.now.nanoseconds(since: start))
        }
        return recorder
    }

    private func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw BenchError("send to redis failed") }
            sent += n
        }
    }

    private var pending: [UInt8] = []

    private func fill() throws {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw BenchError("redis closed the connection") }
        pending += buffer[0..<n]
    }

    private func readLine() throws -> [UInt8] {
        while true {
            if let end = pending.firstIndex(of: UInt8(ascii: "\r")), end + 1 < pending.count {
                let line = Array(pending[0..<end])
                pending.removeFirst(end + 2)
                return line
            }
            try fill()
        }
    }

    private func readReply() throws -> [UInt8]? {
        let line = try readLine()
        guard let kind = line.first else { throw BenchError("an empty reply from redis") }
        let rest = Array(line.dropFirst())
        switch kind {
        case UInt8(ascii: "-"):
            throw BenchError("redis: \(String(decoding: rest, as: UTF8.self))")
        case UInt8(ascii: "$"):
            guard let length = Int(String(decoding: rest, as: UTF8.self)) else {
                throw BenchError("a malformed bulk reply")
            }
            if length < 0 { return nil }
            while pending.count < length + 2 { try fill() }
            let bytes = Array(pending[0..<length])
            pending.removeFirst(length + 2)
            return bytes
        default:
            return rest
        }
    }
}

/// Runs `body` (one timed pass of ours on a Redis path) and sets the server CPU time it cost,
/// read from redis-server before and after.
func withServerCPU(_ redis: RedisServer, _ body: () async throws -> Measurement) async throws -> Measurement {
    let control = try ControlConnection(host: redis.host, port: redis.port)
    let before = try control.serverCPUSeconds()
    var measurement = try await body()
    measurement.serverCPU = try control.serverCPUSeconds() - before
    return measurement
}

/// PINGs a round's round-trip reading takes.
let roundTripPings = 1_000

/// The loopback round trip as the single-message paths see it (the median of ``roundTripPings``),
/// once a round, kept for the report's header.
func measureRoundTrip(_ redis: RedisServer, into results: inout RunResults) throws {
    let pings = try ControlConnection(host: redis.host, port: redis.port).pingRoundTrips(roundTripPings)
    guard let roundTrip = pings.percentiles()?.p50 else { return }
    progress(String(format: "loopback round trip (PING, median of %d): %.0f µs", roundTripPings, roundTrip))
    results.roundTrips.append(roundTrip)
}
