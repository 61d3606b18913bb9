// The C programs of Benchmarks/ (the ceilings and the C client of our protocol), compiled by the
// benchmark itself, so a clone of the repository is all a run needs.
import Foundation

/// The repository's C programs, found in the repository that holds the working directory or this
/// executable, compiled with the system C compiler (`$CC`, else `cc`, else the toolchain's `clang`)
/// into the repository's `.build/benchmarks/`. A program is compiled again only when it is missing
/// or older than its source.
struct CPrograms {
    /// The repository root: the folder holding Package.swift and Benchmarks/.
    let root: URL
    /// Where the compiled programs go.
    let outputDirectory: URL

    /// Finds the repository: the nearest folder above the working directory, then above this
    /// executable, that holds Package.swift and `Benchmarks/Ceilings/`.
    init() throws {
        guard let root = repositoryRoots().first(where: { Self.holdsBenchmarks($0) }) else {
            throw BenchError(
                "cannot find Benchmarks/Ceilings/ in a repository above \(FileManager.default.currentDirectoryPath) or this executable: run the benchmark from a clone of swift-dedup (scripts/bench), or pass --no-ceilings"
            )
        }
        self.root = root
        outputDirectory = root.appendingPathComponent(".build/benchmarks")
    }

    private static func holdsBenchmarks(_ root: URL) -> Bool {
        var isDirectory: ObjCBool = false
        let ceilings = root.appendingPathComponent("Benchmarks/Ceilings").path
        return FileManager.default.fileExists(atPath: ceilings, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The executable built from `source` (a path under the repository root, such as
    /// `Benchmarks/Ceilings/sqlite_ceiling.c`) linked against `library` (`sqlite3`, `hiredis`).
    func executable(source: String, library: String) throws -> String {
        let sourceURL = root.appendingPathComponent(source)
        let name = sourceURL.deletingPathExtension().lastPathComponent
        let executable = outputDirectory.appendingPathComponent(name).path
        guard let sourceDate = modificationDate(sourceURL.path) else {
            throw BenchError("cannot find \(source) in \(root.path)")
        }
        if let builtDate = modificationDate(executable), builtDate >= sourceDate { return executable }

        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let compiler = Self.compiler()
        progress("compiling \(source) with \(compiler) -l\(library)")
        // Compiled under a name of this process's own, then renamed over the old one: two runs at
        // once never execute a half-written program.
        let partial = executable + ".\(getpid()).partial"
        do {
            _ = try runProgram("/usr/bin/env", [compiler, "-O2", "-o", partial, sourceURL.path, "-l\(library)"])
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw BenchError(
                "cannot compile \(source) (it needs lib\(library)'s headers and library: scripts/install-deps): \(error)"
            )
        }
        guard rename(partial, executable) == 0 else {
            throw BenchError("cannot move the compiled \(name) to \(executable): errno \(errno)")
        }
        return executable
    }

    /// `$CC` when set; else `cc`; else `clang`, which every Swift toolchain carries.
    private static func compiler() -> String {
        if let chosen = ProcessInfo.processInfo.environment["CC"], !chosen.isEmpty { return chosen }
        return findOnPath("cc") == nil && findOnPath("clang") != nil ? "clang" : "cc"
    }

    private func modificationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }
}

/// The repositories (folders holding Package.swift) above the working directory and above this
/// executable, nearest first.
func repositoryRoots() -> [URL] {
    let starts = [
        FileManager.default.currentDirectoryPath,
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path,
    ]
    var roots: [URL] = []
    for start in starts {
        var directory = URL(fileURLWithPath: start).standardizedFileURL
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                if !roots.contains(directory) { roots.append(directory) }
                break
            }
            directory.deleteLastPathComponent()
        }
    }
    return roots
}
