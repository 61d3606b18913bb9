import Dedup
import Foundation

/// UTC ISO 8601 times with milliseconds, the one spelling `dedup-inspect` prints; it accepts ISO
/// 8601 with a zone and Unix time with a unit (see ``parse(_:)``).
///
/// Formatting is done by hand from integer milliseconds: exact (no floating-point rounding on the
/// way), and fast enough for a million rows, where a date formatter would dominate the run time.
public enum Timestamp {
    /// `2024-05-01T12:00:00.123Z` for a number of milliseconds since the Unix epoch.
    public static func format(milliseconds: Int64) -> String {
        let (days, msOfDay) = floorDivide(milliseconds, 86_400_000)
        let (year, month, day) = civil(fromDays: days)
        let hour = msOfDay / 3_600_000
        let minute = msOfDay / 60_000 % 60
        let second = msOfDay / 1000 % 60
        let millisecond = msOfDay % 1000
        guard (0...9999).contains(year) else {
            return String(year) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T" + pad(hour, 2) + ":" + pad(minute, 2)
                + ":" + pad(second, 2) + "." + pad(millisecond, 3) + "Z"
        }
        // The common case, byte by byte into one small buffer: a million rows print four times each.
        return String(unsafeUninitializedCapacity: 24) { buffer in
            func put(_ value: Int64, _ width: Int, at offset: Int) {
                var value = value
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    buffer[index] = UInt8(48 + value % 10)
                    value /= 10
                }
            }
            put(year, 4, at: 0)
            buffer[4] = UInt8(ascii: "-")
            put(month, 2, at: 5)
            buffer[7] = UInt8(ascii: "-")
            put(day, 2, at: 8)
            buffer[10] = UInt8(ascii: "T")
            put(hour, 2, at: 11)
            buffer[13] = UInt8(ascii: ":")
            put(minute, 2, at: 14)
            buffer[16] = UInt8(ascii: ":")
            put(second, 2, at: 17)
            buffer[19] = UInt8(ascii: ".")
            put(millisecond, 3, at: 20)
            buffer[23] = UInt8(ascii: "Z")
            return 24
        }
    }

    /// ``format(milliseconds:)`` of a date.
    public static func format(_ date: Date) -> String {
        format(milliseconds: date.millisecondsSince1970)
    }

    /// How the accepted spellings read in help texts and error hints.
    static let accepted =
        "ISO 8601 with a zone (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or Unix time with a unit (1714564800s, 1714564800000ms)"

    /// Parses a time given on the command line. Returns milliseconds since the Unix epoch.
    ///
    /// Accepted:
    /// - ISO 8601 with a zone: `2024-05-01T12:00:00Z`, `2024-05-01T14:00+02:00`, `2024-05-01 12:00:00.5z`;
    /// - Unix time with a unit: `1714564800s`, `1714564800000ms`;
    /// - a bare number from 10^11 to 10^14: Unix milliseconds (1973 to 5138), as nothing else it
    ///   could be (that many seconds lie after the year 5000).
    ///
    /// - Throws: ``DedupError/Code/invalidConfiguration`` with a hint for a bare number that may be
    ///   seconds (`date +%s`: read as milliseconds it would select everything since 1970-01-21),
    ///   microseconds or nanoseconds; for a time or date without a zone (UTC or local time?); and for
    ///   anything else.
    public static func parse(_ text: String) throws(DedupError) -> Int64 {
        let text = text.trimmingCharacters(in: .whitespaces)
        func refuse(_ why: String) -> DedupError {
            DedupError(.invalidConfiguration, "\(text.debugDescription) \(why)")
        }
        if let (value, unit) = unixTime(text) {
            switch unit {
            case "ms": return value
            case "s":
                let (milliseconds, overflow) = value.multipliedReportingOverflow(by: 1000)
                guard !overflow else { throw refuse("is too far from 1970") }
                return milliseconds
            case "":
                if (100_000_000_000..<100_000_000_000_000).contains(value) { return value }
                guard value < 100_000_000_000_000 else {
                    throw refuse(
                        "has no unit and is too large for Unix milliseconds (microseconds or nanoseconds?): give Unix time in seconds or milliseconds with its unit, as in 1714564800s or 1714564800000ms"
                    )
                }
                let (asSeconds, overflow) = value.multipliedReportingOverflow(by: 1000)
                let readings =
                    overflow
                    ? ""
                    : "as Unix seconds it is \(format(milliseconds: asSeconds)), as Unix milliseconds \(format(milliseconds: value)); "
                throw refuse("has no unit: \(readings)write \(text)s or \(text)ms")
            default:
                throw refuse(
                    "has an unknown unit \(unit.debugDescription): use s or ms, as in 1714564800s or 1714564800000ms"
                )
            }
        }
        switch parseISO8601(text) {
        case .time(let milliseconds):
            return milliseconds
        case .zoneless(let milliseconds, let dateOnly):
            let utc = format(milliseconds: milliseconds).replacing(".000Z", with: "Z")
            let spelled = dateOnly ? "a date without a time zone" : "a time without a time zone"
            let local = utc.replacing("Z", with: "+02:00")
            throw refuse("is \(spelled) (UTC or local time?): write \(utc) for UTC, or give the offset, as in \(local)")
        case nil:
            throw refuse("is not a time: use \(accepted)")
        }
    }

    /// A signed integer and the unit after it (`""`, `s`, `ms`, or any other letters), or `nil`.
    private static func unixTime(_ text: String) -> (Int64, String)? {
        var digits = Substring(text)
        let negative = digits.first == "-"
        if negative { digits = digits.dropFirst() }
        let unitStart = digits.firstIndex { !("0"..."9").contains($0) } ?? digits.endIndex
        let unit = digits[unitStart...]
        digits = digits[..<unitStart]
        guard !digits.isEmpty, unit.allSatisfy({ $0.isLetter }), let value = Int64(digits) else { return nil }
        return (negative ? -value : value, String(unit))
    }

    /// What an ISO 8601 spelling gave.
    private enum ISOTime {
        /// A time with a zone, in Unix milliseconds.
        case time(Int64)
        /// A date or time without a zone, read as UTC (for the hint only).
        case zoneless(Int64, dateOnly: Bool)
    }

    private static func parseISO8601(_ text: String) -> ISOTime? {
        var scanner = ByteScanner(Array(text.utf8))
        guard let year = scanner.number(digits: 4), scanner.take("-"),
            let month = scanner.number(digits: 2), scanner.take("-"),
            let day = scanner.number(digits: 2),
            (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day)
        else { return nil }
        var msOfDay: Int64 = 0
        var offsetMinutes: Int64?
        if !scanner.atEnd {
            guard scanner.take("T") || scanner.take("t") || scanner.take(" "),
                let hour = scanner.number(digits: 2), hour < 24, scanner.take(":"),
                let minute = scanner.number(digits: 2), minute < 60
            else { return nil }
            var second: Int64 = 0
            var millisecond: Int64 = 0
            if scanner.take(":") {
                guard let value = scanner.number(digits: 2), value < 60 else { return nil }
                second = value
                if scanner.take(".") || scanner.take(",") {
                    // Any number of fraction digits; beyond milliseconds they are dropped (floor).
                    var digits = 0
                    var fraction: Int64 = 0
                    while let digit = scanner.digit() {
                        if digits < 3 { fraction = fraction * 10 + digit }
                        digits += 1
                    }
                    guard digits > 0 else { return nil }
                    if digits < 3 { for _ in digits..<3 { fraction *= 10 } }
                    millisecond = fraction
                }
            }
            msOfDay = ((hour * 60 + minute) * 60 + second) * 1000 + millisecond
            if scanner.take("Z") || scanner.take("z") {
                offsetMinutes = 0
            } else if let sign = scanner.sign() {
                guard let hours = scanner.number(digits: 2), hours <= 23 else { return nil }
                _ = scanner.take(":")
                guard let minutes = scanner.number(digits: 2), minutes < 60 else { return nil }
                offsetMinutes = sign * (hours * 60 + minutes)
            }
            guard scanner.atEnd else { return nil }
        }
        let local = days(fromCivil: year, month, day) * 86_400_000 + msOfDay
        guard let offsetMinutes else { return .zoneless(local, dateOnly: msOfDay == 0 && text.utf8.count == 10) }
        return .time(local - offsetMinutes * 60_000)
    }

    // MARK: Calendar arithmetic (proleptic Gregorian, after H. Hinnant's civil-from-days)

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        var quotient = value / divisor
        var remainder = value % divisor
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        return (quotient, remainder)
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

/// A cursor over ASCII bytes for the ISO 8601 parser.
private struct ByteScanner {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func take(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(character.value) else { return false }
        index += 1
        return true
    }

    mutating func digit() -> Int64? {
        guard index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 else { return nil }
        defer { index += 1 }
        return Int64(bytes[index] - 48)
    }

    mutating func number(digits count: Int) -> Int64? {
        var value: Int64 = 0
        for _ in 0..<count {
            guard let digit = digit() else { return nil }
            value = value * 10 + digit
        }
        return value
    }

    mutating func sign() -> Int64? {
        if take("+") { return 1 }
        if take("-") { return -1 }
        return nil
    }
}
