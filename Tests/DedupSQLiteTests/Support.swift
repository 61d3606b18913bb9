import Dedup
import DedupSQLite
import DedupTestKit
import Foundation
import Testing

/// A fresh temporary directory, removed when the last reference goes.
final class TemporaryDirectory: Sendable {
    let path: String

    init() {
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("dedup-sqlite-XXXXXX").path
        var bytes = Array(template.utf8CString)
        let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: made!)
    }

    func file(_ name: String = "dedup.sqlite") -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The bytes of a file, or `nil` when it does not exist.
func contents(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func makeID(_ key: String, namespace: String = "orders") -> RecordID {
    try! RecordID(namespace: namespace, key: key)
}

func request(
    _ key: String,
    namespace: String = "orders",
    lease: Duration = .seconds(30),
    fingerprint: String? = nil
) -> ClaimRequest {
    ClaimRequest(
        id: makeID(key, namespace: namespace),
        lease: lease,
        retention: .seconds(3600),
        fingerprint: fingerprint
    )
}

extension ClaimAnswer {
    var lease: Lease? { if case .acquired(let lease) = self { lease } else { nil } }
    var isDuplicate: Bool { if case .duplicate = self { true } else { false } }
    var isInFlight: Bool { if case .inFlight = self { true } else { false } }
}

/// A store on a manual clock in a temporary directory.
struct StoreFixture {
    let directory = TemporaryDirectory()
    let clock = ManualDedupClock()
    var path: String { directory.file() }

    var configuration: SQLiteDedupStore.Configuration {
        SQLiteDedupStore.Configuration(clock: clock)
    }

    func open() throws -> SQLiteDedupStore {
        try SQLiteDedupStore(path: path, configuration: configuration)
    }
}
