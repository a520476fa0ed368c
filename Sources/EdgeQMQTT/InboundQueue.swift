#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A message received from the broker. Topic and payload are copies made inside
/// libmosquitto's callback (one allocation each); the C memory is gone afterwards.
public struct MQTTMessage: Sendable, Hashable {
    /// The topic it was published on.
    public var topic: String
    /// The payload bytes.
    public var payload: [UInt8]
    /// The QoS it was delivered with.
    public var qos: QoS
    /// True when the broker sent it as a retained message (e.g. on subscribe).
    public var retain: Bool
    /// When it arrived: `MonotonicClock.nanoseconds()` read in libmosquitto's callback
    /// (for signal ages and hand-off latency; not a wall-clock time).
    public var arrival: UInt64

    /// Makes a message (arrival: now).
    public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false,
                arrival: UInt64 = MonotonicClock.nanoseconds()) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.arrival = arrival
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the time base of `MQTTMessage.arrival`.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary point (boot); never goes backwards.
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// The bounded hand-off from libmosquitto's network thread to the consumer: a ring
/// buffer under a pthread mutex, with a condition variable (CLOCK_MONOTONIC) for a
/// consumer blocked in `take(timeout:)`. The producer never blocks: when the ring is
/// full it drops (oldest or newest, see `OverflowPolicy`) and counts.
final class InboundQueue: @unchecked Sendable {
    // @unchecked Sendable: every mutable field (`ring`, `head`, `count`, counters,
    // `waiters`, `closed`) is read and written only with `mutex` held.

    private let sync = MonotonicCondition()
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { sync.mutex }
    private var cond: UnsafeMutablePointer<pthread_cond_t> { sync.cond }
    private var ring: [MQTTMessage?]
    private var head = 0
    private var count = 0
    private var waiters = 0
    private var closed = false
    private let policy: OverflowPolicy

    private(set) var received: UInt64 = 0
    private(set) var delivered: UInt64 = 0
    private(set) var dropped: UInt64 = 0
    private(set) var highWater = 0

    let capacity: Int

    init(capacity: Int, policy: OverflowPolicy) {
        self.capacity = max(1, capacity)
        self.policy = policy
        ring = Array(repeating: nil, count: self.capacity)
    }

    /// Called on the network thread. Never blocks beyond the mutex.
    func put(_ message: MQTTMessage) {
        pthread_mutex_lock(mutex)
        received &+= 1
        if count == capacity {
            dropped &+= 1
            switch policy {
            case .dropNewest:
                pthread_mutex_unlock(mutex)
                return
            case .dropOldest:
                ring[head] = nil
                head = (head + 1) % capacity
                count -= 1
            }
        }
        ring[(head + count) % capacity] = message
        count += 1
        if count > highWater { highWater = count }
        let wake = waiters > 0
        pthread_mutex_unlock(mutex)
        if wake { pthread_cond_signal(cond) }
    }

    /// Counts a message the consumer took directly on the network thread (an inline
    /// handler): received and delivered at once, so `received == delivered + dropped + queued`.
    func recordInline() {
        pthread_mutex_lock(mutex)
        received &+= 1
        delivered &+= 1
        pthread_mutex_unlock(mutex)
    }

    /// Takes the oldest message, waiting at most `timeout` seconds (nil: until one
    /// arrives or the queue is closed). Returns nil on timeout or when closed and empty.
    func take(timeout: Double?) -> MQTTMessage? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if count == 0, !closed, let timeout, timeout <= 0 { return nil }
        if count == 0, !closed {
            var deadline = timeout.map(MonotonicCondition.deadline(after:)) ?? timespec()
            waiters += 1
            while count == 0, !closed {
                if timeout == nil {
                    pthread_cond_wait(cond, mutex)
                } else if pthread_cond_timedwait(cond, mutex, &deadline) == ETIMEDOUT {
                    break
                }
            }
            waiters -= 1
        }
        guard count > 0 else { return nil }
        let m = ring[head]
        ring[head] = nil
        head = (head + 1) % capacity
        count -= 1
        delivered &+= 1
        return m
    }

    /// Wakes every waiting consumer; later `take` calls return what is left, then nil.
    func close() {
        pthread_mutex_lock(mutex)
        closed = true
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(cond)
    }

    /// A consistent snapshot of the counters.
    func snapshot() -> (received: UInt64, delivered: UInt64, dropped: UInt64, queued: Int, highWater: Int) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return (received, delivered, dropped, count, highWater)
    }
}
