import Dedup
import DedupPostgres
import DedupStoreLocator
import DedupTestSupport
import Foundation
import Testing

/// `--store postgres://…`: parsed, opened, and never printed with its password.
@Suite("PostgreSQL store locations")
struct StoreLocationTests {
    @Test("postgres:// and postgresql:// parse as PostgreSQL; the description hides the password")
    func parsesAndRedacts() throws {
        for text in ["postgres://app:s3cr%2Ft@db:5432/orders?schema=dedup", "postgresql://app:s3cr%2Ft@db/orders"] {
            let location = try StoreLocation(parsing: text)
            guard case .postgres(let url) = location else {
                throw ConformanceStyleFailure("\(text) parsed as \(location)")
            }
            #expect(url == text)
            #expect(!location.description.contains("s3cr"), "\(location.description)")
            #expect(!location.redactingSecrets(in: "failed: s3cr/t and s3cr%2Ft").contains("s3cr"))
        }
    }

    @Test("the asynchronous open makes a working PostgreSQL store; the synchronous one refuses it with a typed error")
    func opens() async throws {
        let server = try await TestDatabase.shared.server()
        let location = try StoreLocation(parsing: server.url + "?schema=\(freshSchema("locator"))")
        await expectDedupError(.invalidConfiguration) { try location.open() }
        let store = try await location.open(postgres: .init())
        defer { (store as? PostgresDedupStore)?.close() }
        guard
            case .acquired = try await store.claim(
                ClaimRequest(id: makeID("k"), lease: .seconds(30), retention: .seconds(60))
            )
        else {
            throw ConformanceStyleFailure("the claim did not acquire")
        }
    }
}
