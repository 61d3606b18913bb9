// dedup-inspect: a thin shell over DedupInspect, where all the logic (and its tests) live.
import DedupInspect

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

exit(await DedupInspectCommand.run())
