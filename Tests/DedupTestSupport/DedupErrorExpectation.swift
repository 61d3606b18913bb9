import Dedup
import Testing

/// Expects `body` to throw a ``DedupError`` with `code`; returns it.
@discardableResult
public func expectDedupError<R>(
    _ code: DedupError.Code,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> R
) async -> DedupError? {
    do {
        _ = try await body()
        Issue.record("expected DedupError(\(code)), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as DedupError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected DedupError(\(code)), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
