// Where the benchmark's processes run, when asked (--placement): redis-server on a CPU of its own,
// this process and the C ceilings on the others (split), or all of them on one CPU (shared: a
// round trip is two context switches, the short round trip of a machine whose loopback costs
// little). A diagnostic for the machine's noise and for the round trip: pinned or not, the C
// ceiling's batch throughput on this 2-core VM ranged from about 85,000 to 150,000 msgs/s between
// runs, and pinning this process to one CPU takes the second CPU from the concurrent path, so the
// default leaves placement to the scheduler.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct CPUPlacement: CustomStringConvertible {
    let serverCPUs: [Int]
    let clientCPUs: [Int]

    /// The last CPU this process may use for the server, the others for the clients; `nil` with
    /// fewer than two (or when the affinity calls are unavailable).
    static func split() -> CPUPlacement? {
        guard let calls = AffinityCalls.load(), let allowed = calls.allowedCPUs(), allowed.count >= 2 else {
            return nil
        }
        return CPUPlacement(serverCPUs: [allowed.last!], clientCPUs: Array(allowed.dropLast()))
    }

    /// The server and the clients on one CPU, the last this process may use; `nil` when the
    /// affinity calls are unavailable.
    static func shared() -> CPUPlacement? {
        guard let calls = AffinityCalls.load(), let last = calls.allowedCPUs()?.last else { return nil }
        return CPUPlacement(serverCPUs: [last], clientCPUs: [last])
    }

    /// Moves every thread of this process onto the client CPUs; threads started later (and child
    /// processes such as the ceilings) inherit the mask.
    func pinThisProcess() throws {
        try pin(processID: getpid(), to: clientCPUs)
    }

    /// Moves every thread of the server onto the server CPUs.
    func pinServer(processID: Int32) throws {
        try pin(processID: processID, to: serverCPUs)
    }

    var description: String {
        if serverCPUs == clientCPUs {
            return
                "redis-server and the clients (ours and the C ceilings) together on CPU \(serverCPUs.map(String.init).joined(separator: ","))"
        }
        return "redis-server on CPU \(serverCPUs.map(String.init).joined(separator: ",")), "
            + "clients (ours and the C ceilings) on CPU \(clientCPUs.map(String.init).joined(separator: ","))"
    }

    private func pin(processID: Int32, to cpus: [Int]) throws {
        guard let calls = AffinityCalls.load() else { throw BenchError("sched_setaffinity is unavailable") }
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(processID)/task"))?.compactMap {
            Int32($0)
        }
        for thread in threads ?? [processID] where !calls.setAffinity(thread: thread, cpus: cpus) {
            // A thread may have exited since the listing; only a live one that refuses is an error.
            if errno != ESRCH {
                throw BenchError(
                    "cannot pin thread \(thread) of process \(processID) to CPU \(cpus): \(String(cString: strerror(errno)))"
                )
            }
        }
    }
}

/// `sched_getaffinity` and `sched_setaffinity`, which Glibc's Swift module does not export (they
/// need `_GNU_SOURCE`), looked up at run time.
private struct AffinityCalls {
    private typealias Call = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
    private let get: Call
    private let set: Call

    static func load() -> AffinityCalls? {
        guard let get = dlsym(nil, "sched_getaffinity"), let set = dlsym(nil, "sched_setaffinity") else { return nil }
        return AffinityCalls(get: unsafeBitCast(get, to: Call.self), set: unsafeBitCast(set, to: Call.self))
    }

    func allowedCPUs() -> [Int]? {
        var mask = cpu_set_t()
        let size = MemoryLayout<cpu_set_t>.size
        guard withUnsafeMutableBytes(of: &mask, { get(0, size, $0.baseAddress!) }) == 0 else { return nil }
        return withUnsafeBytes(of: &mask) { bytes in
            (0..<(size * 8)).filter { bytes[$0 / 8] & (1 << ($0 % 8)) != 0 }
        }
    }

    func setAffinity(thread: Int32, cpus: [Int]) -> Bool {
        var mask = cpu_set_t()
        let size = MemoryLayout<cpu_set_t>.size
        withUnsafeMutableBytes(of: &mask) { bytes in
            for cpu in cpus where cpu < size * 8 { bytes[cpu / 8] |= UInt8(1 << (cpu % 8)) }
        }
        return withUnsafeMutableBytes(of: &mask) { set(thread, size, $0.baseAddress!) } == 0
    }
}
