import CSQLite
import Foundation

extension Connection {
    /// Opens `path` read-only without creating anything beside it, and sees what writers have
    /// committed.
    ///
    /// A read-only connection to a WAL database opens the write-ahead log on its first read,
    /// creating `-wal` and `-shm` where they are missing and the directory allows, and never removes
    /// them: files of the reading user's, which the owner's consumers may then be unable to write.
    /// So a WAL database opens
    /// - with `mode=ro` when its log and the log's index are there (a connection has the file open,
    ///   or left them): reads go through them, transactions committed but not yet checkpointed
    ///   included, with the index mapped read-only where it is not writable;
    /// - with `immutable=1` when there is no log, or an empty one without its index: no connection
    ///   has the file open, so the file itself holds every commit, and it is read without the log
    ///   and without locks. A writer that starts during the read is not seen; should it checkpoint
    ///   into the file meanwhile, the read may fail as corrupt (it never writes);
    /// - not at all when a log with content has no index: reading it would create one.
    ///
    /// A rollback-journal database opens with `mode=ro`, which creates nothing. A directory at the
    /// path fails as opening it for writing does (`SQLITE_CANTOPEN`, `EISDIR`), rather than as a
    /// disk I/O error at the first read.
    ///
    /// The header is read through SQLite's own file handle: closing a descriptor of our own would
    /// drop every POSIX lock this process holds on the file, another connection's included.
    static func openReadingOnly(_ path: String) throws(SQLiteFailure) -> OpaquePointer {
        var status = stat()
        if stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR {
            throw SQLiteFailure(code: SQLITE_CANTOPEN, message: "unable to open database file", systemErrno: EISDIR)
        }
        let uri = readOnlyURI(path)
        let flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_URI
        var log = stat()
        let hasLog = stat(path + "-wal", &log) == 0
        if hasLog && access(path + "-shm", F_OK) == 0 { return try openHandle(uri, flags: flags) }

        let immutable = try openHandle(uri + "&immutable=1", flags: flags)
        if !isWriteAheadLogged(immutable) {
            sqlite3_close_v2(immutable)
            return try openHandle(uri, flags: flags)
        }
        if !hasLog || log.st_size == 0 { return immutable }
        sqlite3_close_v2(immutable)
        throw SQLiteFailure(
            code: SQLITE_CANTOPEN,
            message:
                "the write-ahead log \(path)-wal holds transactions but its index \(path)-shm is missing, and reading "
                + "the log would create the index: open the store for writing once (a consumer, or a migration) to fold "
                + "the log into the file"
        )
    }

    /// `file:PATH?mode=ro`, the path's `%`, `?` and `#` escaped.
    static func readOnlyURI(_ path: String) -> String {
        var escaped = ""
        for character in path.unicodeScalars {
            switch character {
            case "%": escaped += "%25"
            case "?": escaped += "%3f"
            case "#": escaped += "%23"
            default: escaped.unicodeScalars.append(character)
            }
        }
        // An absolute path gets an empty authority, so one starting with "//" is not taken for a host.
        return "file:" + (path.hasPrefix("/") ? "//" : "") + escaped + "?mode=ro"
    }

    /// The database header marks a WAL database (file format versions 2 at bytes 18 and 19). Read
    /// through the connection's own file handle; an empty or short file is not one.
    private static func isWriteAheadLogged(_ handle: OpaquePointer) -> Bool {
        var file: UnsafeMutablePointer<sqlite3_file>?
        guard sqlite3_file_control(handle, "main", SQLITE_FCNTL_FILE_POINTER, &file) == SQLITE_OK,
            let file, let read = file.pointee.pMethods?.pointee.xRead
        else { return false }
        var header = [UInt8](repeating: 0, count: 20)
        let rc = header.withUnsafeMutableBytes { read(file, $0.baseAddress, 20, 0) }
        return rc == SQLITE_OK && (header[18] == 2 || header[19] == 2)
    }
}
