import Foundation
import Testing

/// `check` against real redis-servers started with the settings that keep dedup records, and with
/// those that lose them (eviction, no persistence), and against servers that refuse to say.
@Suite("dedup-inspect check on Redis settings")
struct RedisCheckTests {
    /// The settings a production Redis needs: the append-only file, and no eviction.
    static let production = ["--appendonly", "yes", "--maxmemory-policy", "noeviction"]

    static func check(_ url: String, format: String = "json") async throws -> InspectRun {
        try await InspectBinary.run(["check", "--store", url, "--format", format])
    }

    @Test("check reports the server's version, persistence and eviction policy; AOF and noeviction are ok (exit 0)")
    func productionSettings() async throws {
        try await withRedisServer(arguments: Self.production) { server in
            let version = try await server.cli("INFO", "server").split(separator: "\r\n").first {
                $0.hasPrefix("redis_version:")
            }
            let run = try await Self.check(server.url(password: nil))
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            let settings = try #require(document.object("server"), "\(run.stdout)")
            #expect(settings.string("version") == version.map { String($0.dropFirst("redis_version:".count)) })
            #expect(settings.bool("aof_enabled") == true)
            #expect(settings.string("appendfsync") == "everysec")
            #expect(settings.string("maxmemory_policy") == "noeviction")
            #expect(settings.int("maxmemory_bytes") == 0)
            #expect(settings.bool("evicts_records") == false)
            #expect(settings.bool("survives_restart") == true)
            #expect((document["warnings"] as? [String]) == [])
            #expect(document.bool("ok") == true)

            let text = try await Self.check(server.url(password: nil), format: "text")
            #expect(text.status == 0)
            #expect(text.stdout.contains("Redis 7"), "\(text.stdout)")
            #expect(text.stdout.contains("AOF (appendfsync everysec)"), "\(text.stdout)")
            #expect(text.stdout.contains("noeviction"), "\(text.stdout)")
            #expect(!text.stdout.contains("warning"), "\(text.stdout)")
        }
    }

    @Test(
        "check warns (exit 6) about an eviction policy that drops records: every record has a TTL",
        arguments: ["volatile-lru", "allkeys-lfu", "volatile-ttl"]
    )
    func evictingPolicy(policy: String) async throws {
        try await withRedisServer(arguments: [
            "--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", policy,
        ]) { server in
            let run = try await Self.check(server.url(password: nil))
            #expect(run.status == 6, "\(run.stderr)")
            let document = try run.json()
            #expect(document.object("server")?.string("maxmemory_policy") == policy)
            #expect(document.object("server")?.int("maxmemory_bytes") == 64 * 1024 * 1024)
            #expect(document.object("server")?.bool("evicts_records") == true)
            let warnings = document["warnings"] as? [String] ?? []
            #expect(warnings.count == 1 && warnings.first?.contains(policy) == true, "\(warnings)")
            #expect(document.bool("ok") == false)

            let text = try await Self.check(server.url(password: nil), format: "text")
            #expect(text.status == 6)
            #expect(text.stdout.contains("warning:") && text.stdout.contains(policy), "\(text.stdout)")
        }
    }

    @Test("check warns (exit 6) when records would not survive a restart (neither AOF nor RDB); RDB alone is noted")
    func noPersistence() async throws {
        try await withRedisServer(arguments: ["--save", "", "--appendonly", "no"]) { server in
            let run = try await Self.check(server.url(password: nil))
            #expect(run.status == 6, "\(run.stderr)")
            let document = try run.json()
            #expect(document.object("server")?.bool("aof_enabled") == false)
            #expect(document.object("server")?.string("rdb_save") == "")
            #expect(document.object("server")?.bool("survives_restart") == false)
            let warnings = document["warnings"] as? [String] ?? []
            #expect(warnings.count == 1 && warnings.first?.contains("restart") == true, "\(warnings)")
        }
        try await withRedisServer(arguments: ["--save", "3600 1 300 100", "--appendonly", "no"]) { server in
            let run = try await Self.check(server.url(password: nil))
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            #expect(document.object("server")?.string("rdb_save") == "3600 1 300 100")
            #expect((document["warnings"] as? [String]) == [])
            #expect((document["notices"] as? [String])?.first?.contains("snapshot") == true, "\(run.stdout)")
        }
    }

    @Test("where the server refuses CONFIG or INFO, check says unknown and notes it without failing (exit 0)")
    func refusedCommands() async throws {
        try await withRedisServer(arguments: Self.production + ["--rename-command", "CONFIG", ""]) { server in
            let run = try await Self.check(server.url(password: nil))
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            // INFO still says AOF and the policy; the RDB rules and appendfsync come from CONFIG.
            #expect(document.object("server")?.bool("aof_enabled") == true)
            #expect(document.object("server")?.string("maxmemory_policy") == "noeviction")
            #expect(document.object("server")?["appendfsync"] is NSNull)
            #expect((document["notices"] as? [String])?.contains { $0.contains("CONFIG") } == true, "\(run.stdout)")
        }
        let acl = ["--user", "inspector", "on", ">pw", "~*", "&*", "+@all", "-config", "-info"]
        try await withRedisServer(arguments: Self.production + acl) { server in
            let url = "redis://inspector:pw@127.0.0.1:\(server.port!)/0"
            let run = try await Self.check(url)
            #expect(run.status == 0, "\(run.stderr)")
            let document = try run.json()
            let settings = try #require(document.object("server"))
            #expect(
                settings["version"] is NSNull && settings["maxmemory_policy"] is NSNull
                    && settings["evicts_records"] is NSNull
            )
            #expect((document["notices"] as? [String] ?? []).count >= 2, "\(run.stdout)")
            let text = try await Self.check(url, format: "text")
            #expect(text.status == 0)
            #expect(text.stdout.contains("unknown"), "\(text.stdout)")
            #expect(!text.stdout.contains("pw@"), "the password stays hidden")
        }
    }
}
