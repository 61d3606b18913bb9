import Synchronization

/// A call's body racing its deadline: whichever ends first answers the caller, once, and the
/// other is cancelled (the body's task may run on until the server answers; its result is dropped).
final class DeadlineRace<Value: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Value, any Error>?
        var finished = false
        var tasks: [Task<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Starts the body and the deadline's timer; the first to end resumes `continuation`.
    func start(
        _ continuation: CheckedContinuation<Value, any Error>,
        body: @escaping @Sendable () async throws -> Value,
        timeout: Duration,
        timeoutError: @escaping @Sendable () -> any Error
    ) {
        // Only the caller's cancellation can finish the race before it starts.
        let cancelledAlready = state.withLock { state in
            if state.finished { return true }
            state.continuation = continuation
            return false
        }
        if cancelledAlready {
            continuation.resume(throwing: CancellationError())
            return
        }
        let work = Task { [self] in
            do { finish(.success(try await body())) } catch { finish(.failure(error)) }
        }
        let timer = Task { [self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            finish(.failure(timeoutError()))
        }
        let running = state.withLock { state in
            if state.finished { return false }
            state.tasks = [work, timer]
            return true
        }
        if !running {
            work.cancel()
            timer.cancel()
        }
    }

    /// Answers the caller with `result` unless it was answered already, and cancels what still runs.
    func finish(_ result: Result<Value, any Error>) {
        let (continuation, tasks) = state.withLock { state in
            guard !state.finished else { return (CheckedContinuation<Value, any Error>?.none, [Task<Void, Never>]()) }
            state.finished = true
            defer {
                state.continuation = nil
                state.tasks = []
            }
            return (state.continuation, state.tasks)
        }
        for task in tasks { task.cancel() }
        continuation?.resume(with: result)
    }
}
