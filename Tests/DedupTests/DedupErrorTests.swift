import Dedup
import Testing

@Suite("DedupError")
struct DedupErrorTests {
    struct Underlying: Error {}

    @Test("errors are equal by code, message and native cause; the underlying error is not compared")
    func equality() {
        let base = DedupError(.busy, "locked", sqliteExtendedResultCode: 5)
        let withUnderlying = DedupError(.busy, "locked", sqliteExtendedResultCode: 5, underlyingError: Underlying())
        #expect(base == withUnderlying)
        #expect(base.hashValue == withUnderlying.hashValue)
        #expect(Set([base, withUnderlying]).count == 1)
        #expect(base != DedupError(.busy, "locked", sqliteExtendedResultCode: 517))
        #expect(base != DedupError(.busy, "locked"))
        #expect(
            DedupError(.wrongType, "w", redisErrorText: "WRONGTYPE a")
                != DedupError(.wrongType, "w", redisErrorText: "WRONGTYPE b")
        )
        #expect(base != DedupError(.storeError, "locked", sqliteExtendedResultCode: 5))
        #expect(base.description == "busy: locked")
    }

    @Test("errors differing only in their PostgreSQL SQLSTATE are unequal")
    func sqlStateEquality() {
        let lockNotAvailable = DedupError(.busy, "locked", postgresSQLState: "55P03")
        let sameState = DedupError(.busy, "locked", postgresSQLState: "55P03", underlyingError: Underlying())
        #expect(lockNotAvailable == sameState && lockNotAvailable.hashValue == sameState.hashValue)
        #expect(lockNotAvailable != DedupError(.busy, "locked", postgresSQLState: "57014"))
        #expect(lockNotAvailable != DedupError(.busy, "locked"))
        #expect(Set([lockNotAvailable, DedupError(.busy, "locked", postgresSQLState: "57014")]).count == 2)
    }

    @Test("an error made with a code and a message has no cause")
    func noCause() {
        let error = DedupError(.storeError, "m")
        #expect(error.sqliteExtendedResultCode == nil && error.redisErrorText == nil && error.underlyingError == nil)
        #expect(error.postgresSQLState == nil)
    }
}
