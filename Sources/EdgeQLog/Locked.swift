import Foundation

/// A value guarded by a pthread mutex (`NSLock`).
///
/// Why not `Synchronization.Mutex`: on Linux it locks with raw futex calls that
/// ThreadSanitizer cannot see, so `swift test --sanitize=thread` reported every access
/// under it as a race; with a pthread mutex TSan checks the writer thread for real.
/// An uncontended lock/unlock costs tens of nanoseconds, well within the decision path's budget.
final class Locked<State>: @unchecked Sendable {
    // @unchecked Sendable: `state` is only read or written inside `withLock`, under `lock`,
    // and this module never lets a reference to it escape the closure.
    private let lock = NSLock()
    private var state: State

    init(_ state: State) {
        self.state = state
    }

    func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }
}
