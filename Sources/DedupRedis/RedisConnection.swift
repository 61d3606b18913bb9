import CHiredis
import Dedup
import Foundation
import Logging
import Synchronization

/// A mutex with a condition variable, for handing work to an I/O thread that sleeps when idle.
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits until signalled or until the monotonic clock reaches `deadline` (nanoseconds).
    func wait(untilNanoseconds deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_cond_timedwait(condition, mutex, &time)
    }
    func signal() { pthread_cond_signal(condition) }
}

/// What a connection needs to know to connect and log in.
package struct ConnectionSettings: Sendable {
    package var endpoint: RedisEndpoint
    package var connectTimeout: Duration
    package var commandTimeout: Duration
    package var reconnect: RedisDedupStore.ReconnectPolicy
    package var logger: Logger
    /// How long the I/O thread waits, at most, for the callers its last round trip resumed to come
    /// back with their next commands, so that one round trip carries them all (see
    /// ``RedisConnection``).
    package var gatherWindow: Duration = RedisConnection.defaultGatherWindow

    package init(
        endpoint: RedisEndpoint,
        connectTimeout: Duration,
        commandTimeout: Duration,
        reconnect: RedisDedupStore.ReconnectPolicy,
        logger: Logger
    ) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnect = reconnect
        self.logger = logger
    }
}

/// One hiredis connection and the thread that owns it.
///
/// Callers enqueue a batch of commands and suspend; the thread takes everything queued, writes it
/// all to the socket with one `send`, reads the replies in order and resumes the callers.
/// Concurrent callers therefore share round trips (automatic pipelining), and a blocking network
/// wait parks this thread, never one of Swift's cooperative threads.
///
/// Callers resumed together come back together: each task of a consumer sends a message's
/// completion right after its claim's reply, then the next message's claim. Taking only the first
/// of them (the one whose enqueue woke the thread) would split one round trip's callers over
/// several. So after a round trip of several callers the thread waits, up to
/// ``ConnectionSettings/gatherWindow``, until as many units are queued as it resumed.
package final class RedisConnection: @unchecked Sendable {
    private struct Job {
        var commands: [RedisCommand]
        var continuation: UnsafeContinuation<Result<[RedisReply], DedupError>, Never>
    }

    let settings: ConnectionSettings
    private let index: Int
    /// ``ConnectionSettings/gatherWindow`` in nanoseconds of `CLOCK_MONOTONIC`, the lock's clock.
    private let gatherNanoseconds: UInt64
    /// Jobs queued or being processed, which the pool reads to choose a connection.
    let load = Atomic<Int>(0)
    /// Round trips made by the I/O thread, and the callers' units they carried (for tests).
    package let roundTrips = Atomic<Int>(0)
    package let unitsSent = Atomic<Int>(0)
    /// Attempts to connect made by the I/O thread (for tests).
    package let connectAttempts = Atomic<Int>(0)
    /// The default ``ConnectionSettings/gatherWindow``.
    package static let defaultGatherWindow = Duration.microseconds(50)

    // Guarded by `lock`.
    let lock = ConditionLock()
    private var pending: [Job] = []
    /// The queue length at which a caller wakes the I/O thread: 1, or while it gathers a round
    /// trip's callers, as many as the last round trip resumed.
    private var wakeThreshold = 1
    var closed = false
    private var started = false
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []
    private var exited = false
    /// `true` while the I/O thread or an inline caller is using `context`.
    private var busy = false
    /// Jobs of tasks that prefer the I/O thread as their executor, run between round trips.
    private var executorJobs: [UnownedJob] = []
    /// Set when the I/O thread stops: jobs then go to the global concurrent executor.
    private var forwardsJobs = false
    /// The I/O thread's ``currentThreadID()`` once it runs, else 0.
    private let ioThreadID = Atomic<UInt>(0)
    /// Whether this connection was handed out as a task executor, and so is never freed.
    private let keptAlive = Atomic<Bool>(false)

    // Used only by whoever set `busy` (the I/O thread or an inline caller).
    var context: UnsafeMutablePointer<redisContext>?
    /// Where the context's reader builds each reply (not `replies`: that names the values read).
    let replyBuffer = ReplyBuffer()

    /// Bytes of commands being sent, kept between round trips (so sending allocates nothing once
    /// it has grown to a round trip's size) up to ``outboundKeptCapacity``.
    var outbound: [UInt8] = []

    /// Bytes read from the socket and not yet given to hiredis's reader; emptied with the
    /// connection (they belong to it).
    var inbound = [UInt8](repeating: 0, count: 65_536)
    var inboundStart = 0
    var inboundEnd = 0

    package init(settings: ConnectionSettings, index: Int) {
        self.settings = settings
        self.index = index
        gatherNanoseconds = Self.nanoseconds(settings.gatherWindow)
    }

    /// Units queued for the I/O thread and not yet taken (for tests).
    package var queuedUnits: Int {
        lock.lock()
        defer { lock.unlock() }
        return pending.count
    }

    /// Sends commands as one pipelined unit and returns their replies in order. Error replies are
    /// returned as ``RedisReply/error(_:)``; a failure of the connection itself is thrown.
    ///
    /// With `mayRunInline`, a caller that finds the connection idle, connected and healthy does the
    /// round trip itself (bounded by the command timeout) instead of handing it to the I/O thread:
    /// the handoff costs two thread wake-ups, as much as the round trip on loopback. The store
    /// allows it only when no other call of the store is in progress, so at most one cooperative
    /// thread waits on the network and only while nothing else wants the store.
    package nonisolated(nonsending) func execute(
        _ commands: [RedisCommand],
        mayRunInline: Bool = false
    ) async throws(DedupError) -> [RedisReply] {
        load.add(1, ordering: .relaxed)
        defer { load.subtract(1, ordering: .relaxed) }
        // A task preferring the I/O thread never runs inline on it (the unit joins the next round
        // trip) and need not wake it (it takes the queue once the task suspends).
        let onIOThread = isIOThread
        if mayRunInline && !onIOThread {
            lock.lock()
            if !closed && !busy && pending.isEmpty && context != nil {
                busy = true
                lock.unlock()
                let result = runInline(commands)
                lock.lock()
                busy = false
                // Wake the I/O thread only if it has work (or must close): a needless wake-up costs
                // two context switches.
                if !pending.isEmpty || closed { lock.signal() }
                lock.unlock()
                if let result { return try result.get() }
            } else {
                lock.unlock()
            }
        }
        let result = await withUnsafeContinuation {
            (continuation: UnsafeContinuation<Result<[RedisReply], DedupError>, Never>) in
            lock.lock()
            if closed {
                lock.unlock()
                continuation.resume(returning: .failure(DedupError(.storeUnavailable, "the Redis store was closed")))
                return
            }
            if !started {
                started = true
                startThread()
            }
            pending.append(Job(commands: commands, continuation: continuation))
            if pending.count == wakeThreshold && !onIOThread { lock.signal() }
            lock.unlock()
        }
        return try result.get()
    }

    /// Stops the thread after the queued work fails with ``/Dedup/DedupError/Code/storeUnavailable`` and
    /// closes the socket; returns once the thread has finished.
    package func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            closed = true
            if !started || exited {
                lock.unlock()
                continuation.resume()
                return
            }
            exitWaiters.append(continuation)
            lock.signal()
            lock.unlock()
        }
        if !startedThread() {
            // No thread ever ran; an inline caller may still hold the context until it returns.
            lock.lock()
            let idle = !busy
            lock.unlock()
            if idle { disconnectIfIdleAndClosed() }
        }
    }

    /// Asks the thread to stop without waiting (for `deinit`).
    package func closeSoon() {
        lock.lock()
        closed = true
        lock.signal()
        lock.unlock()
    }

    private func startedThread() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return started
    }

    private func disconnectIfIdleAndClosed() {
        lock.lock()
        let mayFree = closed && !busy
        if mayFree { busy = true }
        lock.unlock()
        if mayFree {
            disconnect()
            lock.lock()
            busy = false
            lock.unlock()
        }
    }

    private func startThread() {
        let thread = Thread { [self] in run() }
        thread.name = "dedup.redis.\(index)"
        // Tasks preferring this thread run their synchronous code on its stack: as large as a
        // default thread's (only the pages touched are used).
        thread.stackSize = 8 << 20
        thread.start()
    }

    deinit {
        // The reader goes before the reply buffer it points to (stored properties go after this).
        if let context { redisFree(context) }
    }

    // MARK: The I/O thread

    /// Whether the caller runs on the I/O thread (a task preferring it as its executor).
    var isIOThread: Bool { ioThreadID.load(ordering: .relaxed) == Self.currentThreadID() }

    /// The calling thread, as a number no other living thread has.
    private static func currentThreadID() -> UInt {
        #if canImport(Darwin)
        UInt(bitPattern: pthread_self())
        #else
        UInt(pthread_self())
        #endif
    }

    /// Runs the jobs of tasks that prefer this thread queued so far (not those they queue, such as
    /// a task that yields: round trips go on between them); called and returns with `lock` held,
    /// released while they run.
    private func runQueuedExecutorJobs(_ tasks: inout [UnownedJob]) {
        guard !executorJobs.isEmpty else { return }
        swap(&tasks, &executorJobs)
        lock.unlock()
        let executor = asUnownedTaskExecutor()
        for task in tasks { task.runSynchronously(on: executor) }
        tasks.removeAll(keepingCapacity: true)
        lock.lock()
    }

    /// Waits out a reconnect backoff on the I/O thread: the tasks that prefer it run meanwhile (a
    /// server that is down must not freeze them), and closing ends the wait. Returns `false` once
    /// the connection is closed.
    func waitBeforeReconnecting(for backoff: Duration) -> Bool {
        let deadline = Self.monotonicNanoseconds() + Self.nanoseconds(backoff)
        var tasks: [UnownedJob] = []
        lock.lock()
        defer { lock.unlock() }
        while !closed {
            runQueuedExecutorJobs(&tasks)
            if closed || Self.monotonicNanoseconds() >= deadline { break }
            if executorJobs.isEmpty { lock.wait(untilNanoseconds: deadline) }
        }
        return !closed
    }

    private func run() {
        var jobs: [Job] = []
        var tasks: [UnownedJob] = []
        var lastRoundTrip = 0
        ioThreadID.store(Self.currentThreadID(), ordering: .relaxed)
        while true {
            lock.lock()
            while (pending.isEmpty || busy) && executorJobs.isEmpty && !closed { lock.wait() }
            // Tasks first: those the last round trip resumed send their next commands, which then
            // share the next round trip.
            runQueuedExecutorJobs(&tasks)
            if (pending.isEmpty || busy) && !closed {
                lock.unlock()
                continue
            }
            if gatherNanoseconds > 0 && lastRoundTrip > 1 && pending.count < lastRoundTrip {
                // The callers the last round trip resumed are coming back with their next
                // commands: wait a moment for them so that one round trip carries them all.
                let deadline = Self.monotonicNanoseconds() + gatherNanoseconds
                wakeThreshold = lastRoundTrip
                while pending.count < lastRoundTrip && executorJobs.isEmpty && !closed
                    && Self.monotonicNanoseconds() < deadline
                {
                    lock.wait(untilNanoseconds: deadline)
                }
                wakeThreshold = 1
                runQueuedExecutorJobs(&tasks)
            }
            if closed {
                while busy { lock.wait() }  // an inline caller finishes its round trip first
                let left = pending
                pending = []
                // Tasks queued for this thread still run here; from now on, jobs go to the global
                // executor (see ``enqueue(_:)``), those of the callers failed below included.
                forwardsJobs = true
                runQueuedExecutorJobs(&tasks)
                lock.unlock()
                for job in left {
                    job.continuation.resume(
                        returning: .failure(DedupError(.storeUnavailable, "the Redis store was closed"))
                    )
                }
                disconnect()
                lock.lock()
                exited = true
                ioThreadID.store(0, ordering: .relaxed)
                // A connection kept alive as an executor keeps no buffers it will not use again.
                inbound = []
                outbound = []
                let waiters = exitWaiters
                exitWaiters = []
                lock.unlock()
                for waiter in waiters { waiter.resume() }
                return
            }
            swap(&jobs, &pending)
            busy = true
            lock.unlock()
            lastRoundTrip = jobs.count
            process(jobs)
            jobs.removeAll(keepingCapacity: true)
            lock.lock()
            busy = false
            lock.unlock()
        }
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    private func process(_ jobs: [Job]) {
        let context: UnsafeMutablePointer<redisContext>
        do {
            context = try connectedContext()
        } catch {
            for job in jobs { job.continuation.resume(returning: .failure(error)) }
            return
        }
        roundTrips.add(1, ordering: .relaxed)
        unitsSent.add(jobs.count, ordering: .relaxed)
        let results = perform(jobs.map(\.commands), on: context)
        for (job, result) in zip(jobs, results) {
            job.continuation.resume(returning: result)
        }
    }
}

/// The I/O thread as a task executor: tasks that prefer it run on it between round trips, so the
/// replies of a round trip resume them without a thread hop, and the commands they send next
/// share the next round trip (see ``RedisDedupStore/taskExecutor``).
extension RedisConnection: TaskExecutor {
    /// Keeps this connection for the life of the process, once: a task's executor preference
    /// does not keep its executor alive, and a task may outlive the store.
    func keepAliveForTasks() {
        if keptAlive.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            _ = Unmanaged.passRetained(self)
        }
    }

    /// Queues the job for the I/O thread (starting it if needed); once the thread has stopped
    /// (the store was closed), runs it on the global concurrent executor instead.
    package func enqueue(_ job: consuming ExecutorJob) {
        lock.lock()
        if forwardsJobs {
            lock.unlock()
            globalConcurrentExecutor.enqueue(job)
            return
        }
        let job = UnownedJob(job)
        if !started {
            started = true
            startThread()
        }
        executorJobs.append(job)
        if !isIOThread { lock.signal() }
        lock.unlock()
    }
}
