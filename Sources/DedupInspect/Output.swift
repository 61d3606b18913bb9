import Dedup
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// write(2), named so it does not clash with the methods called `write` here.
@inline(__always)
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Darwin)
    return Darwin.write(descriptor, bytes, count)
    #elseif canImport(Musl)
    return Musl.write(descriptor, bytes, count)
    #else
    return Glibc.write(descriptor, bytes, count)
    #endif
}

/// Buffered writes to a file descriptor (standard output), flushed in large chunks so a million
/// rows cost few system calls. A reader that goes away (`| head`) ends the command quietly.
final class OutputSink {
    private let descriptor: Int32
    private var buffer: [UInt8] = []
    private let flushThreshold = 64 * 1024

    /// Set when the reader closed the pipe; later writes are dropped.
    private(set) var readerGone = false

    init(descriptor: Int32 = 1) {
        self.descriptor = descriptor
        buffer.reserveCapacity(flushThreshold + 4096)
    }

    func write(_ text: String) {
        guard !readerGone else { return }
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= flushThreshold { flush() }
    }

    func line(_ text: String = "") {
        write(text)
        write("\n")
    }

    func flush() {
        var offset = 0
        while offset < buffer.count, !readerGone {
            let written = buffer.withUnsafeBytes { bytes in
                systemWrite(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                // EPIPE (SIGPIPE ignored) or another failure: nobody is reading any more.
                readerGone = true
            } else {
                offset += written
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    deinit { flush() }
}

/// Writes to standard error, unbuffered: messages and progress.
enum StandardError {
    static func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = systemWrite(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 { if errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }
}

/// A text table: columns as wide as their widest cell; the last column is never padded, so long
/// keys placed last do not push anything out of line.
struct TextTable {
    var headers: [String]
    var rows: [[String]] = []
    /// Right-align these columns (numbers).
    var rightAligned: Set<Int> = []

    init(_ headers: [String], rightAligned: Set<Int> = []) {
        self.headers = headers
        self.rightAligned = rightAligned
    }

    mutating func append(_ row: [String]) { rows.append(row) }

    /// Column widths for these rows (at least the header's).
    func widths() -> [Int] {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        return widths
    }

    func render(widths: [Int]? = nil, header: Bool = true) -> String {
        let widths = widths ?? self.widths()
        var text = ""
        if header { text += Self.line(headers, widths: widths, rightAligned: rightAligned) }
        for row in rows { text += Self.line(row, widths: widths, rightAligned: rightAligned) }
        return text
    }

    static func line(_ cells: [String], widths: [Int], rightAligned: Set<Int>) -> String {
        var text = ""
        for (index, cell) in cells.enumerated() {
            let isLast = index == cells.count - 1
            let padding = String(repeating: " ", count: max(0, widths[index] - cell.count))
            if rightAligned.contains(index) {
                text += padding + cell
            } else {
                text += isLast ? cell : cell + padding
            }
            if !isLast { text += "  " }
        }
        return text + "\n"
    }
}

/// How a person sees a string that may hold anything: printable text as it is; text with control
/// characters, leading or trailing spaces, or nothing at all as a quoted, escaped Swift literal.
func displayed(_ text: String) -> String {
    let needsQuoting =
        text.isEmpty || text.first == " " || text.last == " " || text.first == "\""
        || text.unicodeScalars.contains {
            $0.value < 0x20 || $0.value == 0x7F || $0.properties.generalCategory == .format
        }
    return needsQuoting ? text.debugDescription : text
}

/// A duration in milliseconds as a person reads it: `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`;
/// negative as `-` and the same.
func humanDuration(milliseconds: Int64) -> String {
    if milliseconds < 0 { return "-" + humanDuration(milliseconds: -milliseconds) }
    if milliseconds < 1000 { return "\(milliseconds)ms" }
    if milliseconds < 60_000 {
        let tenths = milliseconds / 100
        return "\(tenths / 10).\(tenths % 10)s"
    }
    let seconds = milliseconds / 1000
    func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
    if seconds < 3600 { return "\(seconds / 60)m\(two(seconds % 60))s" }
    if seconds < 86400 { return "\(seconds / 3600)h\(two(seconds / 60 % 60))m" }
    return "\(seconds / 86400)d\(two(seconds / 3600 % 24))h"
}

/// Numbers with thousands separators, for people: `1,000,000`.
func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var text = ""
    for (index, character) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { text += "," }
        text.append(character)
    }
    return value < 0 ? "-" + text : text
}

/// A count with its noun in the right number, for people: `1 record`, `0 records`, `1,234 records`.
func counted(_ count: Int, _ noun: String, plural: String? = nil) -> String {
    "\(grouped(count)) " + (count == 1 ? noun : plural ?? noun + "s")
}

/// A share as a percentage for people: `60%`, `66.7%`; never rounded up to 100% or down to 0%.
func percentage(_ part: Int, of whole: Int) -> String {
    guard whole > 0 else { return "0%" }
    let tenths = part * 1000 / whole
    if tenths * whole == part * 1000 && tenths % 10 == 0 { return "\(tenths / 10)%" }
    let shown = max(1, min(999, tenths))
    return "\(shown / 10).\(shown % 10)%"
}
