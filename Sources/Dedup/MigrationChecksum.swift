/// The checksum a store records beside each applied migration, shared by the stores with SQL
/// migrations so both spell it the same way.
package enum MigrationChecksum {
    /// `fnv1a64:` and the 16 hex digits of the 64-bit FNV-1a hash of the text's UTF-8 bytes.
    ///
    /// Not a security measure: it detects an accidental edit of an applied migration, which is all
    /// a checksum here is for (whoever can write the store can rewrite the recorded checksum too).
    package static func fnv1a64(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return "fnv1a64:" + String(repeating: "0", count: 16 - digits.count) + digits
    }
}
