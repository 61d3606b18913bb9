import Testing

@testable import DedupDemo

@Suite struct DemoRunNameTests {
    @Test("two demo runs started in the same millisecond get their own namespace and folder")
    func runsInOneMillisecondDiffer() {
        let names = Set((0..<100).map { _ in DemoScenario.runName(startedAt: 1_796_000_000_000) })
        #expect(names.count == 100)
        #expect(names.allSatisfy { $0.hasPrefix("demo-1796000000000-") })
    }
}
