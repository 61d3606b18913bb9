import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The names created in a directory while it is watched (Linux inotify): a file made and removed
/// again during a run is seen, as a listing afterwards would not.
public final class DirectoryWatch {
    /// inotify refused.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    private let descriptor: Int32

    /// Starts watching `directory`.
    public init(_ directory: String) throws {
        descriptor = inotify_init1(O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw DirectoryWatch.Failure("inotify_init1: \(String(cString: strerror(errno)))")
        }
        guard inotify_add_watch(descriptor, directory, UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) >= 0 else {
            close(descriptor)
            throw DirectoryWatch.Failure("inotify_add_watch \(directory): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    /// The names created since the watch began (or since the last call), in order. The kernel
    /// queues an event before the call that created the file returns, so after a child has exited
    /// every file it created is here.
    public func createdNames() -> [String] {
        var names: [String] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { return names }
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), then len bytes of name.
            var offset = 0
            while offset + 16 <= count {
                let length = buffer.withUnsafeBytes {
                    Int($0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                }
                let name = buffer[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                names.append(String(decoding: name, as: UTF8.self))
                offset += 16 + length
            }
        }
    }
}
