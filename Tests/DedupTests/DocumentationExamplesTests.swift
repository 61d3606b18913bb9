import Foundation
import Testing

/// The README's and the articles' Swift examples cannot drift from the API: every example is a
/// snippet (`Snippets/*.swift`, compiled by `swift build`), articles embed snippets rather than carry
/// code of their own, and each Swift block of the README is a verbatim part of some snippet.
@Suite struct DocumentationExamplesTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func everyReadmeSwiftExampleIsPartOfACompiledSnippet() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let blocks = Self.swiftBlocks(in: readme)
        #expect(!blocks.isEmpty, "the README shows no Swift example")
        let snippets = try Self.snippetBodies()
        for block in blocks {
            let found = snippets.contains { Self.lines(block, appearIn: $0.value) }
            #expect(found, "this README example is in no snippet under Snippets/, so nothing compiles it:\n\(block)")
        }
    }

    @Test func articlesEmbedSnippetsInsteadOfInlineSwift() throws {
        let catalogs = try Self.files(under: "Sources", withExtension: "md").filter { $0.path.contains(".docc/") }
        #expect(!catalogs.isEmpty, "no DocC article found")
        for article in catalogs {
            let text = try String(contentsOf: article, encoding: .utf8)
            #expect(
                Self.swiftBlocks(in: text).isEmpty,
                "\(article.lastPathComponent) carries inline Swift; embed a snippet with @Snippet(path:) instead"
            )
        }
    }

    @Test func theCheckRecognisesAnExampleThatIsNotASnippet() {
        let snippet = "import Dedup\n// snippet.show\nlet store = InMemoryDedupStore()\n    let x = 1\n// snippet.end\n"
        let body = Self.withoutSnippetMarkers(snippet)
        #expect(Self.lines("let store = InMemoryDedupStore()\nlet x = 1", appearIn: body))
        #expect(!Self.lines("let store = InMemoryDedupStore()\nlet y = 2", appearIn: body))
    }

    // MARK: - Reading Markdown and snippets

    /// The bodies of the ```swift fenced blocks of a Markdown text.
    static func swiftBlocks(in markdown: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring]?
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if var open = current {
                if trimmed == "```" {
                    blocks.append(open.joined(separator: "\n"))
                    current = nil
                } else {
                    open.append(line)
                    current = open
                }
            } else if trimmed == "```swift" {
                current = []
            }
        }
        return blocks
    }

    /// Whether the non-blank lines of `example`, compared without their indentation, appear one after
    /// the other in `body`.
    static func lines(_ example: String, appearIn body: String) -> Bool {
        let wanted = significantLines(example)
        let haystack = significantLines(body)
        guard !wanted.isEmpty, wanted.count <= haystack.count else { return false }
        return (0...(haystack.count - wanted.count)).contains { start in
            Array(haystack[start..<(start + wanted.count)]) == wanted
        }
    }

    static func significantLines(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    static func withoutSnippetMarkers(_ source: String) -> String {
        source.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("// snippet.") }
            .joined(separator: "\n")
    }

    static func snippetBodies() throws -> [String: String] {
        var bodies: [String: String] = [:]
        for file in try files(under: "Snippets", withExtension: "swift") {
            bodies[file.lastPathComponent] = withoutSnippetMarkers(try String(contentsOf: file, encoding: .utf8))
        }
        return bodies
    }

    static func files(under folder: String, withExtension pathExtension: String) throws -> [URL] {
        let base = root.appendingPathComponent(folder)
        guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else {
            return []
        }
        return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == pathExtension }
    }
}
