import CSQLite
import Foundation
import Synchronization

/// Checkpoints the write-ahead log on the worker thread when a commit on the hot connection leaves
/// it at or past the threshold, at most one at a time, so no claim pays for a checkpoint. Installing
/// the hook turns off SQLite's own automatic checkpoint on that connection (which would run inside
/// the commit).
///
/// A passive checkpoint alone never lets the log start over while a writer keeps committing (the
/// log restarts only when a write transaction begins with every frame copied back), so each
/// background run is a passive pass, which copies the bulk of the log while writers go on (another
/// one while the last left many new frames: a pass over a large file is slow), followed by a
/// restart pass: it takes the write lock for the few frames committed meanwhile and the sync,
/// after which the next commit writes the log from its start. Claims meeting that lock go to the
/// worker thread, behind the checkpoint. When the restart cannot happen (a reader holds an old
/// snapshot, or other processes keep the write lock past a few milliseconds), the log grows, and
/// once it is ``inlineFactor`` times the threshold a commit checkpoints inline, as SQLite's
/// automatic one would.
final class CheckpointTrigger: Sendable {
    /// How many times the threshold the log may reach before a commit checkpoints it inline.
    static let inlineFactor = 16
    /// How long the restart pass waits for the write lock and for readers of the log, in polls of
    /// `restartPollMicroseconds`: short, because it holds the write lock while it waits for readers.
    static let restartPolls: Int32 = 200
    static let restartPollMicroseconds: UInt32 = 100
    /// At most how many passive passes run before the restart pass.
    static let passivePasses = 4

    private let worker: BlockingWorker
    private let pages: Int32
    private let busyTimeout: Duration
    private let pending = Atomic<Bool>(false)
    /// How many background checkpoints let the log start over.
    let restarts = Atomic<Int>(0)
    /// How many checkpoints ran inside a commit on the hot connection.
    let inlineRuns = Atomic<Int>(0)
    /// The log's size, in pages, after the latest commit on the hot connection.
    let logPages = Atomic<Int>(0)
    /// Runs a background checkpoint's passive pass (the closure it is given) on the worker thread;
    /// tests wrap it in another connection's write transaction, as a writer that keeps committing would.
    let aroundPassivePass = Mutex<@Sendable (() -> Void) -> Void>({ pass in pass() })

    init(worker: BlockingWorker, pages: Int32, busyTimeout: Duration) {
        self.worker = worker
        self.pages = pages
        self.busyTimeout = busyTimeout
    }

    func install(on connection: Connection) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_wal_hook(
            connection.db,
            { context, db, _, pages in
                guard let context else { return SQLITE_OK }
                Unmanaged<CheckpointTrigger>.fromOpaque(context).takeUnretainedValue().committed(db: db, pages: pages)
                return SQLITE_OK
            },
            context
        )
    }

    private func committed(db: OpaquePointer?, pages: Int32) {
        logPages.store(Int(pages), ordering: .relaxed)
        if pages >= self.pages &* Int32(Self.inlineFactor) {
            sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            inlineRuns.add(1, ordering: .relaxed)
            return
        }
        guard pages >= self.pages,
            pending.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        worker.enqueue { [self] connection in
            if let connection, checkpointAndRestart(connection) {
                restarts.add(1, ordering: .relaxed)
            }
            pending.store(false, ordering: .releasing)
        }
    }

    /// Passive passes (another while the last one left many new frames), then, when they copied
    /// every frame, a restart pass; whether the log will start over at the next commit.
    private func checkpointAndRestart(_ connection: Connection) -> Bool {
        let around = aroundPassivePass.withLock { $0 }
        for pass in 1...Self.passivePasses {
            var logFrames: Int32 = -1
            var copiedFrames: Int32 = -1
            around {
                sqlite3_wal_checkpoint_v2(connection.db, nil, SQLITE_CHECKPOINT_PASSIVE, &logFrames, &copiedFrames)
            }
            // A reader of an older snapshot kept frames from being copied: the restart would hold the
            // write lock while waiting for it, so the log is left to grow until that reader is done.
            guard logFrames >= 0, copiedFrames == logFrames else { return false }
            // The frames committed during the pass are what the restart copies under the write lock;
            // on a large file a pass is slow, and while they are many another passive pass takes them.
            let committedMeanwhile = Int32(clamping: logPages.load(ordering: .relaxed)) - logFrames
            if committedMeanwhile <= pages / 4 || pass == Self.passivePasses { break }
        }
        // SQLite's busy timeout sleeps in steps of milliseconds, long enough for a writer that
        // keeps committing to take the lock back every time; polling finds the gap between commits.
        sqlite3_busy_handler(
            connection.db,
            { _, polls in
                usleep(CheckpointTrigger.restartPollMicroseconds)
                return polls < CheckpointTrigger.restartPolls ? 1 : 0
            },
            nil
        )
        defer { connection.setBusyTimeout(busyTimeout) }
        return sqlite3_wal_checkpoint_v2(connection.db, nil, SQLITE_CHECKPOINT_RESTART, nil, nil) == SQLITE_OK
    }
}
