#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// Turns SIGINT and SIGTERM into a call of `handler` on a private queue, so a long-running
/// command can stop in order (stop deciding, flush, publish offline, disconnect, exit 0)
/// instead of dying mid-write.
///
/// Keep the watcher alive for as long as the handler should run; releasing it restores the
/// default dispositions.
public final class SignalWatcher: @unchecked Sendable {
    // @unchecked Sendable: both stored properties are immutable after init; dispatch
    // sources are thread-safe objects (cancel may be called from any thread).
    private let sources: [any DispatchSourceSignal]
    private let signals: [Int32]

    /// Watches `signals` (SIGINT and SIGTERM by default); `handler` gets the signal number.
    public init(_ signals: [Int32] = [SIGINT, SIGTERM], handler: @escaping @Sendable (Int32) -> Void) {
        let queue = DispatchQueue(label: "edgeq.signals")
        self.signals = signals
        sources = signals.map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { handler(sig) }
            source.resume()
            return source
        }
    }

    deinit {
        for s in sources { s.cancel() }
        for sig in signals { signal(sig, SIG_DFL) }
    }
}
