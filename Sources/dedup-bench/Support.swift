// Small pieces the benchmark needs: timing, latency percentiles, memory readings, keys, machine facts.
import Foundation

/// A fatal benchmark error with a message meant for the person running it.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes progress to standard error so standard output carries only the report.
func progress(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

extension Duration {
    /// Whole nanoseconds.
    var nanos: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Seconds as a floating-point number.
    var seconds: Double { Double(nanos) / 1e9 }
}

/// Per-message latencies, collected into a preallocated buffer so recording costs no allocation.
struct LatencyRecorder {
    private var samples: [Int64]
    private var count = 0

    init(capacity: Int) { samples = [Int64](repeating: 0, count: capacity) }

    mutating func record(_ nanoseconds: Int64) {
        if count < samples.count {
            samples[count] = nanoseconds
            count += 1
        }
    }

    /// Merges another recorder's samples (the concurrent path records one per task).
    mutating func append(contentsOf other: LatencyRecorder) {
        for index in 0..<other.count { record(other.samples[index]) }
    }

    /// p50 and p99 in microseconds; `nil` without samples.
    func percentiles() -> (p50: Double, p99: Double)? {
        guard count > 0 else { return nil }
        let sorted = samples[0..<count].sorted()
        func at(_ fraction: Double) -> Double {
            let index = min(count - 1, Int((Double(count) * fraction).rounded(.up)) - 1)
            return Double(sorted[max(0, index)]) / 1000
        }
        return (at(0.50), at(0.99))
    }
}

/// Resident memory of this process, from /proc/self/status (getrusage as a fallback for the peak).
struct MemoryReading {
    /// Resident set size now, in bytes.
    var residentBytes: Int
    /// Peak resident set size so far (VmHWM), in bytes.
    var peakBytes: Int

    static func now() -> MemoryReading {
        var resident = 0
        var peak = 0
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                if line.hasPrefix("VmRSS:") { resident = kilobytes(line) * 1024 }
                if line.hasPrefix("VmHWM:") { peak = kilobytes(line) * 1024 }
            }
        }
        if peak == 0 {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            peak = Int(usage.ru_maxrss) * 1024  // kilobytes on Linux
        }
        return MemoryReading(residentBytes: resident, peakBytes: peak)
    }

    private static func kilobytes(_ line: Substring) -> Int {
        Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
    }
}

/// Formats a byte count in MiB with one decimal.
func mib(_ bytes: Int) -> String {
    String(format: "%.1f MiB", Double(bytes) / 1_048_576)
}

/// Dedup keys shaped like the SQLite ceiling's (two random 64-bit numbers in hex, 33 characters), from
/// a seeded generator so a run is repeatable.
struct KeyGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    mutating func next64() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    mutating func key() -> String {
        hex16(next64()) + "-" + hex16(next64())
    }

    mutating func keys(_ count: Int) -> [String] {
        var keys: [String] = []
        keys.reserveCapacity(count)
        for _ in 0..<count { keys.append(key()) }
        return keys
    }

    private func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// What the machine is, for the report.
struct MachineFacts {
    var cores: Int
    var cpuModel: String
    var memory: String

    static func read() -> MachineFacts {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let totalKB =
            meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        return MachineFacts(
            cores: ProcessInfo.processInfo.activeProcessorCount,
            cpuModel: model,
            memory: String(format: "%.1f GiB", Double(totalKB) / 1_048_576)
        )
    }
}

/// Runs a program to its end and returns its standard output; standard error is passed through.
func runProgram(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (name, value) in environment { env[name] = value }
    process.environment = env
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    // Poll: waitUntilExit spins a run loop, taking a core from the program being measured.
    while process.isRunning { usleep(1_000) }
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw BenchError(
            "\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus):\n\(text)"
        )
    }
    return text
}

/// Finds a program on PATH.
func findOnPath(_ name: String) -> String? {
    if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
