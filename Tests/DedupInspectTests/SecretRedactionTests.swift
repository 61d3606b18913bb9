import Dedup
import DedupRedis
import DedupTestSupport
import Foundation
import Testing

/// Every command of `dedup-inspect` and `dedup-demo` (the built binaries), in text and JSON, on
/// success and on each error, against a real redis-server that asks for a password: no output
/// carries the password, in either user-info form Redis URLs have.
@Suite("Passwords are never printed")
struct SecretRedactionTests {
    /// The default user's password (`requirepass`), given as `redis://PASSWORD@host`.
    static let defaultPassword = "Hunter2Secret"
    /// An ACL user's password with the characters a URL must escape, given as `user:password@`.
    static let operatorPassword = "Op:p@ss/w0rd%"
    static let operatorPasswordEscaped = "Op%3Ap%40ss%2Fw0rd%25"
    static let wrongPasswords = ["Wrong9Passw0rd", "Wr0ng%2FOperat0r"]

    /// Every piece of a secret long enough to be one: 6 characters of it anywhere is a leak.
    static let forbiddenFragments: Set<String> = {
        let secrets = [defaultPassword, operatorPassword, operatorPasswordEscaped, "Wr0ng/Operat0r"] + wrongPasswords
        var fragments: Set<String> = []
        for secret in secrets {
            let characters = Array(secret)
            for start in 0...(characters.count - 6) { fragments.insert(String(characters[start..<start + 6])) }
        }
        return fragments
    }()

    /// One run's status and output, checked for the status expected and for leaks.
    struct Outcome {
        var arguments: [String]
        var status: Int32
        var stdout: String
        var stderr: String

        func expect(status expected: Int32, sourceLocation: SourceLocation = #_sourceLocation) {
            let leaked = SecretRedactionTests.forbiddenFragments.filter { stdout.contains($0) || stderr.contains($0) }
            #expect(
                leaked.isEmpty,
                "\(arguments.first ?? "") printed a password fragment (\(leaked.sorted()))",
                sourceLocation: sourceLocation
            )
            // The message names the command, not the secret: the arguments hold the password.
            #expect(
                status == expected,
                "\(arguments.first ?? "") exited \(status), not \(expected): \(stderr.prefix(300))",
                sourceLocation: sourceLocation
            )
        }
    }

    func inspect(_ arguments: [String], environment: [String: String] = [:]) async throws -> Outcome {
        let run = try await InspectBinary.run(arguments, environment: environment)
        return Outcome(arguments: arguments, status: run.status, stdout: run.stdout, stderr: run.stderr)
    }

    func demo(_ arguments: [String]) async throws -> Outcome {
        let run = try await runProcess(try BuiltExecutables.path("dedup-demo"), arguments)
        return Outcome(
            arguments: ["dedup-demo"] + arguments,
            status: run.status,
            stdout: run.output,
            stderr: run.errors
        )
    }

    @Test("dedup-inspect and dedup-demo: every command, both formats, success and every error, both URL forms")
    func noPasswordInAnyOutput() async throws {
        // Persistent, so `check` has no settings to warn about and exits 0.
        let server = try await RedisServer.start(arguments: [
            "--appendonly", "yes",
            "--requirepass", Self.defaultPassword,
            "--user", "operator", "on", ">" + Self.operatorPassword, "~*", "&*", "+@all",
        ])
        do {
            // A stream and consumer group for replay.
            _ = try await server.cli(
                arguments: ["XGROUP", "CREATE", "events", "readers", "$", "MKSTREAM"],
                password: Self.defaultPassword
            )
            try await checkEveryCommand(port: server.port!)
            await server.stop()
        } catch {
            await server.stop()
            throw error
        }
    }

    func checkEveryCommand(port: Int) async throws {
        let host = "127.0.0.1:\(port)"
        let down = "127.0.0.1:\(closedLoopbackPort())"
        // (good URL, a wrong password in the same form, the good credentials at a closed port)
        let forms: [(good: String, wrong: String, unreachable: String)] = [
            (
                "redis://\(Self.defaultPassword)@\(host)/0", "redis://\(Self.wrongPasswords[0])@\(host)/0",
                "redis://\(Self.defaultPassword)@\(down)/0"
            ),
            (
                "redis://operator:\(Self.operatorPasswordEscaped)@\(host)/0",
                "redis://operator:\(Self.wrongPasswords[1])@\(host)/0",
                "redis://operator:\(Self.operatorPasswordEscaped)@\(down)/0"
            ),
        ]
        let store = try RedisDedupStore(url: forms[0].good)
        let filler = StoreFiller(store: store)
        try await filler.complete("orders", keys: (0..<6).map { "o-\($0)" }, result: Data("ok".utf8))
        try await filler.claim("orders", key: "o-busy")

        let readOnly: [[String]] = [
            ["stats"], ["list"], ["list", "--limit", "2"], ["show", "--namespace", "orders", "o-1"],
            ["forget", "--namespace", "orders", "o-1"], ["reset", "--namespace", "orders", "--all-time"], ["purge"],
            ["migrate"], ["check", "--round-trips", "1"],
        ]
        for (index, form) in forms.enumerated() {
            for format in ["text", "json"] {
                let style = ["--format", format]
                for command in readOnly {
                    try await inspect(command + ["--store", form.good] + style).expect(status: 0)
                    try await inspect(command + ["--store", form.wrong] + style).expect(status: 4)
                    try await inspect(command + ["--store", form.unreachable] + style).expect(status: 3)
                    try await inspect(command + style, environment: ["DEDUP_STORE": form.good]).expect(status: 0)
                }
                // Not found, nothing matched.
                try await inspect(["show", "--store", form.good, "--namespace", "orders", "nope"] + style).expect(
                    status: 1
                )
                try await inspect(["forget", "--store", form.good, "--namespace", "orders", "nope", "--yes"] + style)
                    .expect(status: 1)
                try await inspect(
                    ["reset", "--store", form.good, "--namespace", "ordres", "--all-time", "--yes"] + style
                ).expect(status: 1)
                // Usage errors: the URL without --store, an unknown option, a bad time, a bad cursor,
                // a malformed URL, a mistyped scheme.
                try await inspect(["stats", form.good] + style).expect(status: 2)
                try await inspect(["list", "--store", form.good, "--bogus"] + style).expect(status: 2)
                try await inspect(["list", "--store=\(form.good)", "--bogus"] + style).expect(status: 2)
                try await inspect(
                    ["reset", "--store", form.good, "--namespace", "orders", "--from", "1796574600", "--yes"] + style
                ).expect(status: 2)
                try await inspect(["list", "--store", form.good, "--cursor", "garbage"] + style).expect(status: 2)
                try await inspect(
                    ["stats", "--store", form.good.replacingOccurrences(of: ":\(port)/", with: ":notaport/")] + style
                ).expect(status: 2)
                try await inspect(
                    ["stats", "--store", form.good.replacingOccurrences(of: "redis://", with: "redis:/")] + style
                ).expect(status: 2)
                try await inspect(
                    ["stats", "--store", form.good.replacingOccurrences(of: "redis://", with: "rediss://")] + style
                ).expect(status: 2)
                try await checkReplay(form, style: style)
            }
            // Deleting for real.
            try await inspect(["forget", "--store", form.good, "--namespace", "orders", "o-\(index)", "--yes"]).expect(
                status: 0
            )
            try await inspect(["purge", "--store", form.good, "--yes", "--format", "json"]).expect(status: 0)

            // dedup-demo: its banner and summary, an unreachable store, usage errors.
            try await demo(["--messages", "3", "--consumers", "1", "--store", form.good]).expect(status: 0)
            try await demo(["--messages", "3", "--store", form.unreachable]).expect(status: 3)
            try await demo(["--messages", "3", form.good]).expect(status: 2)
            try await demo(["--store", form.good, "--bogus"]).expect(status: 2)
            try await demo(["--store", form.good.replacingOccurrences(of: ":\(port)/", with: ":notaport/")]).expect(
                status: 2
            )
        }
        try await inspect(["reset", "--store", forms[1].good, "--namespace", "orders", "--all-time", "--yes"]).expect(
            status: 0
        )
        await store.close()
    }

    /// `replay` with the password in its `--stream` URL, in `--store`'s, or both.
    func checkReplay(_ form: (good: String, wrong: String, unreachable: String), style: [String]) async throws {
        // The store URLs end in the database, /0; a stream URL ends in the stream's key.
        func stream(_ url: String) -> String { String(url.dropLast(2)) + "/events" }
        let replay = ["replay", "--namespace", "orders", "--group", "readers", "--from", "1000ms"] + style
        try await inspect(replay + ["--store", form.good, "--stream", stream(form.good)]).expect(status: 0)
        try await inspect(replay + ["--store", form.good, "--stream", stream(form.wrong)]).expect(status: 4)
        try await inspect(replay + ["--store", form.good, "--stream", stream(form.unreachable)]).expect(status: 3)
        try await inspect(replay + ["--store", form.wrong, "--stream", stream(form.good)]).expect(status: 4)
        try await inspect(replay + ["--stream", stream(form.good)], environment: ["DEDUP_STORE": form.good]).expect(
            status: 0
        )
        // A missing group; usage errors: a stream URL without its key, an unknown option.
        try await inspect(
            [
                "replay", "--namespace", "orders", "--group", "nope", "--from", "1000ms", "--store", form.good,
                "--stream", stream(form.good),
            ] + style
        )
        .expect(status: 1)
        try await inspect(replay + ["--store", form.good, "--stream", String(form.good.dropLast(2))]).expect(status: 2)
        try await inspect(replay + ["--store", form.good, "--stream=\(stream(form.good))", "--bogus"]).expect(status: 2)
    }
}
