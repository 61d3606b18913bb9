import DedupDemo

/// The `dedup-demo` executable: all of it lives in the DedupDemo library.
@main
extension DemoCommand {}
