import DedupDemo

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `dedup-demo` executable: all of it lives in the DedupDemo library.
@main
enum DemoMain {
    static func main() async {
        exit(await DemoCommand.run())
    }
}
