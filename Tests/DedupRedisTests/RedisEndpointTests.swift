import Dedup
import DedupRedis
import DedupTestSupport
import Testing

@Suite("Redis URLs")
struct RedisEndpointTests {
    @Test("redis:// with defaults: port 6379, database 0")
    func defaults() throws {
        let endpoint = try RedisEndpoint(url: "redis://cache.internal")
        #expect(endpoint.transport == .tcp(host: "cache.internal", port: 6379))
        #expect(endpoint.database == 0)
        #expect(endpoint.username == nil)
        #expect(endpoint.password == nil)
    }

    @Test("redis:// with ACL user, password, port and database")
    func full() throws {
        let endpoint = try RedisEndpoint(url: "redis://worker:p%40ss%3Aword@10.0.0.5:6380/3")
        #expect(endpoint.transport == .tcp(host: "10.0.0.5", port: 6380))
        #expect(endpoint.username == "worker")
        #expect(endpoint.password == "p@ss:word")
        #expect(endpoint.database == 3)
    }

    @Test("several hosts are seed nodes of one cluster, printed without the password")
    func seedNodes() throws {
        let endpoint = try RedisEndpoint(url: "redis://worker:s3cret@10.0.0.5:7000,[::1]:7001,node-c")
        #expect(endpoint.transport == .tcp(host: "10.0.0.5", port: 7000))
        #expect(endpoint.additionalSeeds == [.tcp(host: "::1", port: 7001), .tcp(host: "node-c", port: 6379)])
        #expect(endpoint.seeds.count == 3)
        #expect(endpoint.password == "s3cret")
        #expect(endpoint.redactedDescription == "redis://worker:***@10.0.0.5:7000,[::1]:7001,node-c:6379/0")
        #expect(try RedisEndpoint(url: "redis://10.0.0.5").additionalSeeds.isEmpty)
        for bad in ["redis://a:1,", "redis://a:1,,b:2", "redis://a:1,b:0", "redis://:pw@a:1,:2"] {
            let error = #expect(throws: DedupError.self, "\(bad)") { try RedisEndpoint(url: bad) }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.message.contains("pw") == false)
        }
    }

    @Test("redis://:password@host logs in as the default user; IPv6 hosts in brackets")
    func passwordOnlyAndIPv6() throws {
        let endpoint = try RedisEndpoint(url: "redis://:secret@[::1]:7000")
        #expect(endpoint.transport == .tcp(host: "::1", port: 7000))
        #expect(endpoint.username == nil)
        #expect(endpoint.password == "secret")
        #expect(endpoint.redactedDescription == "redis://:***@[::1]:7000/0")
    }

    @Test("unix:// with password and ?db=N")
    func unixSocket() throws {
        let endpoint = try RedisEndpoint(url: "unix://:secret@/run/redis/redis.sock?db=2")
        #expect(endpoint.transport == .unixSocket(path: "/run/redis/redis.sock"))
        #expect(endpoint.password == "secret")
        #expect(endpoint.database == 2)
        #expect(endpoint.redactedDescription == "unix://:***@/run/redis/redis.sock?db=2")
        let plain = try RedisEndpoint(url: "unix:///tmp/r.sock")
        #expect(plain.transport == .unixSocket(path: "/tmp/r.sock"))
        #expect(plain.database == 0)
    }

    @Test("the password never appears in descriptions, debug descriptions or dumps")
    func redaction() throws {
        let endpoint = try RedisEndpoint(url: "redis://admin:hunter2@localhost:6379/1")
        #expect(endpoint.redactedDescription == "redis://admin:***@localhost:6379/1")
        var dumped = ""
        dump(endpoint, to: &dumped)
        for text in ["\(endpoint)", String(reflecting: endpoint), dumped] {
            #expect(!text.contains("hunter2"), "\(text)")
        }
        let store = try RedisDedupStore(url: "redis://admin:hunter2@localhost:6379/1")
        #expect(store.endpoint.redactedDescription == "redis://admin:***@localhost:6379/1")
    }

    @Test(
        "the one redaction routine hides exactly what the parser logs in with, in both user-info forms",
        arguments: [
            "redis://Hunter2Secret@127.0.0.1:6379/0",
            "redis://:Hunter2Secret@127.0.0.1:6379/0",
            "redis://operator:Hunter2Secret@127.0.0.1:6379/0",
            "redis://operator:Hunter2%40Secret%2F@127.0.0.1:6379/0",
            "redis://operator:Hunter2/Secret@host",
            "redis://Hunter2@Secret@host",
            "unix://Hunter2Secret@/run/redis.sock",
            "unix://:Hunter2/Secret@/run/redis.sock?db=1",
        ]
    )
    func redactionMatchesParsing(url: String) throws {
        let endpoint = try RedisEndpoint(url: url)
        let password = try #require(endpoint.password)
        #expect(password.hasPrefix("Hunter2"))
        for text in [URLCredentials.redacting(url), endpoint.redactedDescription] {
            #expect(!text.contains("Hunter2") && !text.contains("Secret"), "\(text)")
            #expect(text.contains("***"), "\(text)")
        }
        #expect(URLCredentials.secrets(in: url).contains(password))
    }

    @Test("a malformed URL's message hides a password that holds a slash or an at sign")
    func malformedKeepsOddPasswordsHidden() {
        for url in [
            "redis://u:Hunter2/Secret@host:notaport", "redis://Hunter2/Secret@host:notaport",
            "unix://:Hunter2/Secret@run/r.sock",
        ] {
            do {
                _ = try RedisEndpoint(url: url)
                Issue.record("\(url) was accepted")
            } catch {
                #expect(!error.message.contains("Hunter2") && !error.message.contains("Secret"), "\(error.message)")
            }
        }
    }

    @Test(
        "malformed URLs are refused with invalidConfiguration, without the password",
        arguments: [
            ("rediss://:hunter2@host:6379", "TLS"),
            ("http://host", "unknown scheme"),
            ("localhost:6379", "expected redis://"),
            ("redis://host:notaport", "port"),
            ("redis://host:70000", "port"),
            ("redis://:hunter2@host/notadb", "database number"),
            ("redis://:hunter2@/0", "host is missing"),
            ("unix://host/tmp/r.sock", "no host"),
            ("unix://", "absolute socket path"),
            ("unix:///tmp/r.sock?db=x", "db must be"),
            ("unix:///tmp/r.sock?timeout=3", "unknown query parameter"),
            ("redis://:hunter2@host:6379/1?db=2", "twice"),
            ("redis://:@host", "password is empty"),
        ]
    )
    func invalid(url: String, mention: String) {
        do {
            _ = try RedisEndpoint(url: url)
            Issue.record("\(url) was accepted")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.contains(mention), "\(error.message)")
            #expect(!error.message.contains("hunter2"), "\(error.message)")
        }
    }

    @Test("RedisDedupStore(url:) throws the same errors and checks its configuration")
    func storeInit() async {
        await expectDedupError(.invalidConfiguration) { _ = try RedisDedupStore(url: "rediss://host") }
        await expectDedupError(.invalidConfiguration) {
            _ = try RedisDedupStore(url: "redis://host", configuration: .init(poolSize: 0))
        }
        await expectDedupError(.invalidConfiguration) {
            _ = try RedisDedupStore(url: "redis://host", configuration: .init(keyPrefix: ""))
        }
        await expectDedupError(.invalidConfiguration) {
            _ = try RedisDedupStore(url: "redis://host", configuration: .init(commandTimeout: .zero))
        }
    }
}
