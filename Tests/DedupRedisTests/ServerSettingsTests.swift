import DedupRedis
import DedupTestSupport
import Testing

@Suite("Redis server settings")
struct ServerSettingsTests {
    @Test("serverSettings reads the version, AOF, RDB rules and eviction policy of a real server")
    func readsSettings() async throws {
        let arguments = [
            "--appendonly", "yes", "--appendfsync", "always", "--save", "60 1", "--maxmemory", "32mb",
            "--maxmemory-policy", "allkeys-lru",
        ]
        try await withRedisServer(arguments: arguments) { server in
            let store = try makeRedisStore(server.url)
            let settings = try await store.serverSettings()
            await store.close()
            #expect(settings.version?.hasPrefix("7.") == true, "\(settings)")
            #expect(settings.appendOnly == true)
            #expect(settings.appendFsync == "always")
            #expect(settings.snapshotRules == "60 1")
            #expect(settings.evictionPolicy == "allkeys-lru")
            #expect(settings.maxMemoryBytes == Int64(32 << 20))
            #expect(settings.unreadable.isEmpty)
            #expect(settings.evictsRecords == true)
            #expect(settings.survivesRestart == true)
        }
    }

    @Test("a refused CONFIG leaves its settings unknown and says why; INFO still gives the rest")
    func refusedConfig() async throws {
        try await withRedisServer(arguments: ["--rename-command", "CONFIG", ""]) { server in
            let store = try makeRedisStore(server.url)
            let settings = try await store.serverSettings()
            await store.close()
            #expect(settings.snapshotRules == nil && settings.appendFsync == nil)
            #expect(settings.appendOnly == false && settings.evictionPolicy == "noeviction")
            #expect(
                settings.unreadable.count == 5 && settings.unreadable.allSatisfy { $0.hasPrefix("CONFIG GET") },
                "\(settings.unreadable)"
            )
            #expect(settings.survivesRestart == nil, "RDB rules unknown and no AOF: cannot tell")
        }
    }

    @Test("which eviction policies drop records (all have TTLs) and which persistence survives a restart")
    func judgements() {
        for policy in [
            "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "allkeys-lru", "allkeys-lfu",
            "allkeys-random",
        ] {
            #expect(RedisServerSettings(evictionPolicy: policy).evictsRecords == true, "\(policy)")
        }
        #expect(RedisServerSettings(evictionPolicy: "noeviction").evictsRecords == false)
        #expect(RedisServerSettings(evictionPolicy: "something-new").evictsRecords == nil)
        #expect(RedisServerSettings().evictsRecords == nil)
        #expect(RedisServerSettings(appendOnly: false, snapshotRules: "").survivesRestart == false)
        #expect(RedisServerSettings(appendOnly: false, snapshotRules: "3600 1").survivesRestart == true)
        #expect(RedisServerSettings(appendOnly: true).survivesRestart == true)
        #expect(RedisServerSettings(appendOnly: false).survivesRestart == nil)
    }
}
