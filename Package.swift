// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "swift-dedup",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Dedup", targets: ["Dedup"]),
        .library(name: "DedupSQLite", targets: ["DedupSQLite"]),
        .library(name: "DedupRedis", targets: ["DedupRedis"]),
        .library(name: "DedupRedisStreams", targets: ["DedupRedisStreams"]),
        .library(name: "DedupPostgres", targets: ["DedupPostgres"]),
        .library(name: "DedupTestKit", targets: ["DedupTestKit"]),
        .executable(name: "dedup-inspect", targets: ["dedup-inspect"]),
        .executable(name: "dedup-demo", targets: ["dedup-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        // `swift package generate-documentation` (scripts/docs); no code of it is linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // System libraries: the only way to SQLite and Redis here.
        // Headers and libraries come from /usr (libsqlite3-dev, libhiredis-dev); no pkg-config, whose
        // sqlite3 flags carry a define SwiftPM refuses. `providers` names the packages that install them.
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),

        // The core: identity, records, the store protocol and the consumer. Knows no store.
        .target(
            name: "Dedup",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "OrderedCollections", package: "swift-collections"),
            ]
        ),
        .target(
            name: "DedupTestKit",
            dependencies: ["Dedup"]
        ),
        .target(
            name: "DedupSQLite",
            dependencies: [
                "Dedup", "CSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "DedupRedis",
            dependencies: [
                "Dedup", "CHiredis",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // PostgreSQL through the application's own postgres-nio client; the schema is Migrations/postgres.
        .target(
            name: "DedupPostgres",
            dependencies: [
                "Dedup",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // A consumer-group runner for Redis Streams, on DedupRedis's connections.
        .target(
            name: "DedupRedisStreams",
            dependencies: [
                "Dedup", "DedupRedis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // Opening a store from the `--store` spelling every executable shares, and running an
        // executable's command line without printing that spelling's password.
        .target(
            name: "DedupStoreLocator",
            dependencies: [
                "Dedup", "DedupSQLite", "DedupRedis", "DedupPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Executables are thin shells over testable libraries.
        .target(
            name: "DedupInspect",
            dependencies: [
                "Dedup", "DedupSQLite", "DedupRedis", "DedupRedisStreams", "DedupPostgres", "DedupStoreLocator",
                "CSQLite",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "DedupDemo",
            dependencies: [
                "Dedup", "DedupSQLite", "DedupRedis", "DedupRedisStreams", "DedupPostgres", "DedupTestKit",
                "DedupStoreLocator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "dedup-inspect", dependencies: ["DedupInspect"]),
        .executableTarget(name: "dedup-demo", dependencies: ["DedupDemo"]),
        // The benchmark (scripts/bench, Benchmarks/README.md): a target, not a product users see.
        .executableTarget(
            name: "dedup-bench",
            dependencies: [
                "Dedup", "DedupSQLite", "DedupRedis", "DedupRedisStreams", "DedupStoreLocator", "DedupPostgres",
                // The PostgreSQL server the tests start (initdb in a temporary folder), started the same way.
                "DedupTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // A worker process for the multi-process tests (several processes on one store).
        .executableTarget(
            name: "dedup-worker",
            dependencies: [
                "Dedup", "DedupStoreLocator", "DedupTestKit", "DedupPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Helpers for the test targets: a redis-server per test, the built executables.
        .target(
            name: "DedupTestSupport",
            dependencies: ["Dedup"],
            path: "Tests/DedupTestSupport"
        ),
        .testTarget(
            name: "DedupTests",
            dependencies: [
                "Dedup", "DedupTestKit",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "DedupSQLiteTests",
            dependencies: ["Dedup", "DedupSQLite", "DedupTestKit", "DedupTestSupport", "CSQLite"]
        ),
        .testTarget(
            name: "DedupRedisTests",
            dependencies: ["CHiredis", "Dedup", "DedupRedis", "DedupTestKit", "DedupTestSupport"]
        ),
        .testTarget(
            name: "DedupRedisStreamsTests",
            dependencies: [
                "Dedup", "DedupRedis", "DedupRedisStreams", "DedupSQLite", "DedupTestKit", "DedupTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "DedupPostgresTests",
            dependencies: [
                "Dedup", "DedupPostgres", "DedupStoreLocator", "DedupTestKit", "DedupTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "DedupInspectTests",
            dependencies: [
                "Dedup", "DedupDemo", "DedupInspect", "DedupSQLite", "DedupRedis", "DedupRedisStreams", "DedupTestKit",
                "DedupTestSupport",
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
