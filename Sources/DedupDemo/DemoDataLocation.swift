import DedupRedis
import DedupStoreLocator
import Foundation

/// Where a demo run left its data, and the shell command that removes exactly that: printed at the
/// end so that trying the demo on a real store leaves nothing behind unknowingly.
public struct DemoDataLocation: Sendable {
    /// What holds the run's data, safe to print (a Redis password is redacted).
    public var description: String
    /// A shell command that removes the run's data and nothing else; it never carries a password.
    public var removalCommand: String

    /// The SQLite file at `path`. When the demo created the file, removing it (with its `-wal` and
    /// `-shm` companions) is exact; when the file was there before, only this run's rows go.
    static func sqlite(path: String, existedBefore: Bool, namespace: String, effectsTable: String) -> DemoDataLocation {
        let description =
            "sqlite:\(path) (dedup records of namespace \(namespace), effect rows in table \(effectsTable))"
        guard existedBefore else {
            let files = [path, path + "-wal", path + "-shm"].map(shellQuoted).joined(separator: " ")
            return DemoDataLocation(description: description, removalCommand: "rm -f -- \(files)")
        }
        let statements =
            "DELETE FROM dedup_records WHERE namespace = '\(namespace)'; "
            + "DELETE FROM \(effectsTable) WHERE run = '\(namespace)';"
        return DemoDataLocation(
            description: description,
            removalCommand: "sqlite3 \(shellQuoted(path)) \(shellQuoted(statements))"
        )
    }

    /// The Redis keys of `namespace` under `keyPrefix` (`<keyPrefix>:<namespace length>:<namespace>:<key>`).
    static func redis(
        location: StoreLocation,
        endpoint: RedisEndpoint,
        keyPrefix: String,
        namespace: String
    ) -> DemoDataLocation {
        let pattern = "\(keyPrefix):\(namespace.utf8.count):\(namespace):*"
        var connection: [String]
        switch endpoint.transport {
        case .tcp(let host, let port): connection = ["-h", host, "-p", String(port)]
        case .unixSocket(let path): connection = ["-s", path]
        }
        if endpoint.database != 0 { connection += ["-n", String(endpoint.database)] }
        if let user = endpoint.username { connection += ["--user", user] }
        // redis-cli reads the password from REDISCLI_AUTH, so the printed command never holds it.
        let cli = "redis-cli " + connection.map(shellQuoted).joined(separator: " ")
        var command = "\(cli) --scan --pattern \(shellQuoted(pattern)) | xargs -r \(cli) del"
        if endpoint.password != nil { command += "   # with the password in REDISCLI_AUTH" }
        return DemoDataLocation(description: "\(location), keys \(pattern)", removalCommand: command)
    }

    /// The keys of `namespace` on a Redis Cluster, spread over its primaries: `redis-cli --scan`
    /// sees one node's keys only, so the removal goes through `dedup-inspect reset`, which scans
    /// every primary and deletes each record on its own.
    static func redisCluster(location: StoreLocation, keyPrefix: String, namespace: String) -> DemoDataLocation {
        let pattern = "\(keyPrefix):\(namespace.utf8.count):\(namespace):*"
        var command =
            "dedup-inspect reset --store \(shellQuoted(location.description)) --namespace \(shellQuoted(namespace)) --all-time --yes"
        if location.description.contains("***") { command += "   # with the password in place of ***" }
        return DemoDataLocation(description: "\(location) (a Redis Cluster), keys \(pattern)", removalCommand: command)
    }

    /// `text` as one shell word: as it is when only safe characters make it up, else single-quoted.
    static func shellQuoted(_ text: String) -> String {
        let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,")
        if !text.isEmpty, text.allSatisfy(safe.contains) { return text }
        return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
