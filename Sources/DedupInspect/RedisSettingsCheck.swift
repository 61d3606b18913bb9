import DedupRedis

/// What `check` makes of a Redis server's settings (``RedisDedupStore/serverSettings()``): lines to
/// print, warnings about settings that lose dedup records (exit 6), and notices about what could
/// not be told (said, not failed: managed servers often refuse `CONFIG`).
struct RedisSettingsCheck {
    var details: [(String, String)] = []
    var warnings: [String] = []
    var notices: [String] = []
    var json: JSONValue

    init(_ settings: RedisServerSettings) {
        details.append(("server", settings.version.map { "Redis \($0)" } ?? "unknown"))
        details.append(("persistence", Self.persistence(settings)))
        var eviction = settings.evictionPolicy ?? "unknown"
        if let bytes = settings.maxMemoryBytes {
            eviction += bytes == 0 ? " (no maxmemory set)" : " (maxmemory \(bytes) bytes)"
        }
        details.append(("eviction", eviction))

        // Each refused command once, with the server's answer.
        var refused: [String: String] = [:]
        for entry in settings.unreadable {
            let command = entry.hasPrefix("CONFIG") ? "CONFIG GET" : "INFO"
            if refused[command] == nil {
                refused[command] = String(entry.drop { $0 != ":" }.dropFirst().drop { $0 == " " })
                notices.append("the server refused \(command): \(refused[command]!)")
            }
        }
        switch settings.evictsRecords {
        case true?:
            warnings.append(
                "maxmemory-policy \(settings.evictionPolicy!) lets Redis evict dedup records when memory runs out (every record "
                    + "has a TTL), and their messages then run again: set maxmemory-policy noeviction (writes then fail with OOM instead)"
            )
        case nil:
            let policy =
                settings.evictionPolicy.map { "maxmemory-policy \($0) is not one this tool knows" }
                ?? "the eviction policy is unknown"
            notices.append(policy + ": production needs maxmemory-policy noeviction")
        case false?:
            break
        }
        switch settings.survivesRestart {
        case false?:
            warnings.append(
                "neither the append-only file nor RDB snapshots are on: a restart of Redis loses every record, and their "
                    + "messages run again: set appendonly yes"
            )
        case nil:
            notices.append("whether records survive a restart is unknown: production needs appendonly yes")
        case true?:
            if settings.appendOnly == false {
                notices.append(
                    "RDB snapshots only: a restart loses the records written since the last snapshot (their messages run "
                        + "again if delivered again); appendonly yes keeps them"
                )
            }
        }
        json = .object([
            ("version", .string(settings.version)),
            ("aof_enabled", Self.bool(settings.appendOnly)),
            ("appendfsync", .string(settings.appendFsync)),
            ("rdb_save", .string(settings.snapshotRules)),
            ("maxmemory_policy", .string(settings.evictionPolicy)),
            ("maxmemory_bytes", settings.maxMemoryBytes.map { .int($0) } ?? .null),
            ("evicts_records", Self.bool(settings.evictsRecords)),
            ("survives_restart", Self.bool(settings.survivesRestart)),
        ])
    }

    /// `AOF (appendfsync everysec), RDB snapshots (save 3600 1)`, `none`, or what is unknown.
    private static func persistence(_ settings: RedisServerSettings) -> String {
        var parts: [String] = []
        switch settings.appendOnly {
        case true?: parts.append("AOF" + (settings.appendFsync.map { " (appendfsync \($0))" } ?? ""))
        case nil: parts.append("AOF unknown")
        case false?: if settings.snapshotRules == nil { parts.append("no AOF") }
        }
        switch settings.snapshotRules {
        case let rules? where !rules.isEmpty: parts.append("RDB snapshots (save \(rules))")
        case nil: parts.append("RDB snapshots unknown")
        default: break
        }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }

    private static func bool(_ value: Bool?) -> JSONValue { value.map { .bool($0) } ?? .null }
}
