#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension ClaimRequest {
    /// The largest ``ownerLabel``, in UTF-8 bytes.
    public static let maximumOwnerLabelBytes = 128

    /// `<host name>:<process ID>` of this process, as it was when first asked: the owner label of
    /// claims that name none.
    public static let defaultOwnerLabel: String = {
        var name = [UInt8](repeating: 0, count: 256)
        let named = name.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { gethostname($0.baseAddress!, $0.count - 1) == 0 }
        }
        // Host names are at most 64 bytes on Linux; the cut keeps any other within the limit.
        let host = named ? String(decoding: name.prefix { $0 != 0 }.prefix(100), as: UTF8.self) : ""
        return "\(host.isEmpty ? "unknown-host" : host):\(getpid())"
    }()

    /// Checks an owner label: 1 to ``maximumOwnerLabelBytes`` UTF-8 bytes.
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` for an empty or longer label.
    public static func validate(ownerLabel: String) throws(DedupError) {
        let bytes = ownerLabel.utf8.count
        if bytes == 0 {
            throw DedupError(.invalidConfiguration, "the owner label is empty")
        }
        if bytes > maximumOwnerLabelBytes {
            throw DedupError(
                .invalidConfiguration,
                "the owner label is \(bytes) UTF-8 bytes; the limit is \(maximumOwnerLabelBytes)"
            )
        }
    }
}
