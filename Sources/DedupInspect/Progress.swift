import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// When long operations report progress on standard error.
public enum ProgressMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Only when standard error is a terminal: quiet in pipes, scripts and CI logs.
    case auto
    /// Always (for watching a redirected run with `tail -f`).
    case always
    /// Never.
    case never
}

/// One status line on standard error, redrawn in place at most a few times a second so that
/// reporting never costs more than the work it reports on.
final class ProgressLine {
    private let enabled: Bool
    private let verb: String
    private let started = ContinuousClock.now
    private var lastDrawn: ContinuousClock.Instant?
    private var drawn = false

    /// - Parameter verb: what is being counted, as in `listed` or `deleted`.
    init(mode: ProgressMode, verb: String) {
        switch mode {
        case .auto: enabled = isatty(2) == 1
        case .always: enabled = true
        case .never: enabled = false
        }
        self.verb = verb
    }

    /// Reports `count` records done so far (`of`: the total, when known).
    func update(_ count: Int, of total: Int? = nil, force: Bool = false) {
        guard enabled else { return }
        let now = ContinuousClock.now
        if !force, let lastDrawn, now - lastDrawn < .milliseconds(200) { return }
        lastDrawn = now
        let elapsed = now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Int(Double(count) / seconds) : 0
        var text = "\r\u{1B}[K\(verb) "
        text += total.map { "\(grouped(count)) of \(counted($0, "record"))" } ?? counted(count, "record")
        text += " (\(grouped(rate))/s)"
        StandardError.write(text)
        drawn = true
    }

    /// Clears the line (the final figures go to standard output).
    func finish() {
        guard enabled, drawn else { return }
        StandardError.write("\r\u{1B}[K")
        drawn = false
    }
}
