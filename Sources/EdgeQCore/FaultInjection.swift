#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Crash points for the crash-safety tests: when the environment variable `EDGEQ_FAULT`
/// names a point, the process kills itself with SIGKILL there, exactly as a power cut or an
/// OOM kill would. Unset (always, in production) it costs one dictionary lookup at a few
/// places of retraining and promotion — never on the decision path.
///
/// Points: `retrain-before-save`, `store-before-rename`, `store-after-rename`,
/// `current-before-rename`, `current-after-rename`. Hang points (`hang(_:)`):
/// `decision-hang-on-command` (a control-plane command message makes the thread holding the
/// decision lock hang: a stuck decision, for the systemd watchdog's test).
public enum FaultInjection {
    public static let armed: String? = ProcessInfo.processInfo.environment["EDGEQ_FAULT"]

    public static func point(_ name: String) {
        guard let armed, armed == name else { return }
        FileHandle.standardError.write(Data("EDGEQ_FAULT: killing the process at \(name)\n".utf8))
        kill(getpid(), SIGKILL)
        // SIGKILL cannot be caught; this line is never reached.
    }

    /// When `EDGEQ_FAULT` names this point, the calling thread stops for good here (a hang,
    /// not a crash): what the service watchdog must notice.
    public static func hang(_ name: String) {
        guard let armed, armed == name else { return }
        FileHandle.standardError.write(Data("EDGEQ_FAULT: hanging this thread at \(name)\n".utf8))
        while true { sleep(3600) }
    }
}
