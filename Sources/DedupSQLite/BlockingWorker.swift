import Foundation

/// A thread of the store's own with its own connection, for work that may wait: writes that found
/// the lock held by another connection (retried here with the busy timeout), checkpoints, purges,
/// inspection scans and transactional handlers. Waiting here parks this thread, never one of Swift's
/// cooperative threads.
///
/// `@unchecked Sendable`: `jobs`, `stopping` and `finished` are only touched under `condition`;
/// `connection` only on the worker thread (and by `init` before the thread starts).
final class BlockingWorker: @unchecked Sendable {
    typealias Job = (Connection?) -> Void

    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var head = 0
    private var stopping = false
    private var finished = false
    private var connection: Connection?
    private var thread: Thread?

    init(connection: Connection, name: String) {
        self.connection = connection
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// Queues a job; it runs on the worker thread with the connection, or with `nil` once stopped.
    func enqueue(_ job: @escaping Job) {
        condition.lock()
        if finished || stopping {
            condition.unlock()
            job(nil)
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` on the worker thread and returns its result to the awaiting task.
    func run<R: Sendable>(_ body: @escaping @Sendable (Connection) throws -> R) async throws -> R {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            enqueue { connection in
                guard let connection else {
                    continuation.resume(throwing: SQLiteDedupStore.closedError)
                    return
                }
                continuation.resume(with: Result { try body(connection) })
            }
        }
    }

    /// Finishes the queued jobs, closes the connection and ends the thread; waits for that unless
    /// called on the worker thread itself.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        let onWorker = Thread.current === thread
        while !finished && !onWorker { condition.wait() }
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while head == jobs.count && !stopping { condition.wait() }
            if head == jobs.count {
                // Stopping and nothing left.
                finished = true
                connection?.close()
                connection = nil
                condition.broadcast()
                condition.unlock()
                return
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            condition.unlock()
            job(connection)
        }
    }
}
