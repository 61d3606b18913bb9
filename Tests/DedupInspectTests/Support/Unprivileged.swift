import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Running the built `dedup-inspect` as a user who cannot write the test's files. Root ignores file
/// permissions, so when the tests run as root (CI, containers) a 0444 file is only read-only to
/// another user: the child then runs as `nobody` (65534) through util-linux's `setpriv`.
enum UnprivilegedRun {
    /// The command that starts a program as `nobody`; `nil` when the tests do not run as root (they
    /// are an unprivileged user already) or when `nobody` cannot run the built binary here (no
    /// `setpriv`, or the toolchain's libraries under a directory only root may enter).
    static let launcher: [String]? = {
        guard getuid() == 0 else { return nil }
        guard
            let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { return nil }
        let launcher = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        // The binary and its libraries must be reachable for nobody.
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: setpriv)
        probe.arguments = Array(launcher.dropFirst()) + [InspectBinary.path, "--help"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return nil }
        probe.waitUntilExit()
        return probe.terminationStatus == 0 ? launcher : nil
    }()
}
