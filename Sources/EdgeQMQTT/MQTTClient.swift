#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CMosquitto
import Logging
import Synchronization

/// The connection as seen from outside.
public enum ConnectionState: Sendable, Equatable, CustomStringConvertible {
    /// Created; `start()` not called yet.
    case idle
    /// The first connection attempt is under way.
    case connecting
    /// Connected: the broker accepted us (CONNACK success) and subscriptions were sent.
    case connected
    /// Not connected; retrying with backoff. `lastFailure` says why the last attempt
    /// (or the last connection) failed.
    case reconnecting(lastFailure: MQTTError)
    /// Stopped by `stop()`; terminal.
    case stopped

    /// The state for logs and messages.
    public var description: String {
        switch self {
        case .idle: return "idle"
        case .connecting: return "connecting"
        case .connected: return "connected"
        case .reconnecting(let f): return "reconnecting (\(f.message))"
        case .stopped: return "stopped"
        }
    }
}

/// Counters of the client, consistent with each other at the time they were read:
/// `received == delivered + dropped + queued`.
public struct MQTTCounters: Sendable, Equatable {
    /// Messages that arrived from the broker.
    public var received: UInt64
    /// Messages handed to the consumer by `receive`.
    public var delivered: UInt64
    /// Messages dropped because the inbound hand-off was full.
    public var dropped: UInt64
    /// Messages waiting in the hand-off now.
    public var queued: Int
    /// The most messages ever waiting at once (never above the capacity).
    public var queueHighWater: Int
    /// Successful connections (CONNACK success), the first one included.
    public var connects: UInt64
    /// Failed connection attempts and lost connections.
    public var failures: UInt64
    /// Connections lost because another client with the same client id took the session over
    /// (see `MQTTError.Code.sessionTakenOver`).
    public var sessionTakeovers: UInt64 = 0
    /// Takeovers in a row (0 once a connection lasted `takeoverStreakReset` seconds); each one
    /// doubles the reconnect delay (`ReconnectBackoff.delay(afterTakeovers:)`).
    public var takeoverStreak: Int = 0
    /// Successful connections after the first one.
    public var reconnects: UInt64 { connects > 0 ? connects - 1 : 0 }
}

/// What `publish` did with a message.
public enum PublishOutcome: Sendable, Equatable {
    /// Handed to libmosquitto for sending now (for QoS ≥ 1 it is resent until acknowledged).
    case accepted
    /// Not connected; a QoS ≥ 1 message is kept in memory and sent after the reconnect.
    case queuedUntilReconnect
}

/// An MQTT client over libmosquitto with its own network thread, automatic reconnect
/// with bounded exponential backoff, subscriptions restored on every connect, and a
/// bounded inbound hand-off.
///
/// Use: make it, `subscribe`, `start()`, then `receive(timeout:)` on one consumer thread
/// and `publish` from any thread; `stop()` (or release) disconnects and joins the thread.
///
/// ```swift
/// let client = try MQTTClient(MQTTConfiguration(url: "mqtt://127.0.0.1:1883", clientID: "gw-1"))
/// try client.subscribe("plant/+/temp", qos: .atLeastOnce)
/// client.start()
/// while let m = client.receive(timeout: 1) { … }
/// ```
public final class MQTTClient: Sendable {
    private let connection: Connection

    /// Creates the client and sets every option; does not connect (see `start()`).
    ///
    /// - Throws: `MQTTError` `.invalidConfiguration` (persistent session without a client
    ///   id, keep-alive below 5 s, a client certificate without its key, inbound capacity
    ///   below 1), `.library` when libmosquitto refuses an option (e.g. a TLS file it
    ///   cannot read: the message names it), `.invalidTopic` for a bad Last Will topic.
    public init(_ configuration: MQTTConfiguration, logger: Logger = Logger(label: "edgeq.mqtt")) throws {
        connection = try Connection(configuration, logger: logger)
    }

    deinit {
        connection.stop()
    }

    /// The configuration it was made with (the password stays a `Secret`).
    public var configuration: MQTTConfiguration { connection.config }

    /// Starts the network thread, which connects, reconnects with backoff after any
    /// failure, and restores subscriptions on each connect. Returns at once; a second
    /// call does nothing. Watch `state` or call `waitUntilConnected(timeout:)`.
    public func start() { connection.start(handler: nil) }

    /// Starts the network thread like `start()`, with `handler` called on that thread for
    /// every message as it arrives, inside libmosquitto's callback: no hand-off, no thread
    /// wake-up between the socket and the handler. The handler returns true when it has
    /// dealt with the message; false puts it in the inbound hand-off for `receive` as usual.
    ///
    /// The handler must be short and must not block: while it runs, no other message is
    /// read, no keep-alive is answered and a TCP back-pressure builds up instead of the
    /// hand-off's drop policy. It may call `publish`. Messages it takes count as received
    /// and delivered. Returns at once; a second call (or after `start()`) does nothing.
    public func start(handler: @escaping @Sendable (MQTTMessage) -> Bool) { connection.start(handler: handler) }

    /// Waits until connected.
    ///
    /// - Throws: `MQTTError` `.timeout` when not connected within `timeout` seconds (its
    ///   message quotes the last failure: refused credentials, TLS, connection refused…);
    ///   `.stopped` when the client was stopped.
    public func waitUntilConnected(timeout: Double) throws {
        try connection.waitUntilConnected(timeout: timeout)
    }

    /// The connection state now.
    public var state: ConnectionState { connection.state }

    /// The counters now.
    public var counters: MQTTCounters { connection.counters }

    /// Subscribes to `filter` (`+` and `#` wildcards allowed) now if connected, and again
    /// on every later connect. Subscribing again to the same filter changes its QoS.
    ///
    /// With MQTT 5, retained messages are sent only when the subscription is new at the
    /// broker (a resumed persistent session does not replay them).
    /// `noLocal` (MQTT 5 only; ignored with 3.1.1, which has no such option): the broker does
    /// not send this client its own publications on `filter` — a gateway that publishes on a
    /// topic it also reads (the actuator topic the incumbent uses, its own command topics)
    /// does not hear its own echo.
    /// - Throws: `MQTTError` `.invalidTopic` for an invalid filter; `.library` when
    ///   libmosquitto refuses it (e.g. out of memory).
    public func subscribe(_ filter: String, qos: QoS = .atLeastOnce, noLocal: Bool = false) throws {
        try connection.subscribe(filter, qos: qos, noLocal: noLocal)
    }

    /// Unsubscribes from `filter` and forgets it (not restored on reconnect).
    ///
    /// - Throws: `MQTTError` `.invalidTopic` for an invalid filter.
    public func unsubscribe(_ filter: String) throws {
        try connection.unsubscribe(filter)
    }

    /// Publishes `payload` on `topic`. Callable from any thread.
    ///
    /// - Returns: `.accepted`, or `.queuedUntilReconnect` for QoS ≥ 1 while disconnected
    ///   (kept in memory only: it is lost if this process dies).
    /// - Throws: `MQTTError` `.invalidTopic` (wildcards or invalid UTF-8 in the topic),
    ///   `.connectionLost` for a QoS 0 message while disconnected (it is not sent),
    ///   `.stopped` after `stop()`, `.library` for the other libmosquitto errors
    ///   (payload too large, out of memory).
    @discardableResult
    public func publish(_ topic: String, _ payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false) throws -> PublishOutcome {
        try connection.publish(topic, payload, qos: qos, retain: retain)
    }

    /// Publishes a UTF-8 string (see `publish(_:_:qos:retain:)`).
    @discardableResult
    public func publish(_ topic: String, _ text: String, qos: QoS = .atMostOnce, retain: Bool = false) throws -> PublishOutcome {
        try connection.publish(topic, Array(text.utf8), qos: qos, retain: retain)
    }

    /// Takes the oldest received message, waiting at most `timeout` seconds (nil: until
    /// one arrives or the client stops). Meant for one consumer thread; returns nil on
    /// timeout, or once stopped and drained.
    public func receive(timeout: Double?) -> MQTTMessage? {
        connection.queue.take(timeout: timeout)
    }

    /// Waits until every message published so far has left: a QoS 0 message written to the
    /// socket, a QoS ≥ 1 message acknowledged by the broker (libmosquitto's on_publish). Call it
    /// before `stop()` when the last messages matter: libmosquitto sends at most
    /// `max_inflight_messages` (20) QoS ≥ 1 messages ahead of their acknowledgements, and the
    /// rest of a burst still queued at `stop()` is dropped with the connection.
    ///
    /// - Returns: true when everything left within `timeout` seconds, false otherwise.
    @discardableResult
    public func waitUntilSent(timeout: Double) -> Bool {
        connection.waitUntilSent(timeout: timeout)
    }

    /// Sends DISCONNECT (the broker then does not publish the Last Will), stops and joins
    /// the network thread, and wakes any consumer blocked in `receive`. Messages still in
    /// the hand-off can be taken afterwards. Messages still queued for sending are dropped
    /// (`waitUntilSent` first, when they matter). Idempotent.
    public func stop() { connection.stop() }
}

// MARK: - The connection core (shared with the network thread and the C callbacks)

/// libmosquitto's global initialisation, done once per process.
private let mosquittoLibraryInitialised: Bool = {
    mosquitto_lib_init()
    return true
}()

/// Owns the `struct mosquitto *` (freed in deinit, after the network thread is joined).
///
/// It is the userdata of the C callbacks, passed unretained: the callbacks run only on the
/// network thread inside `mosquitto_loop`/`mosquitto_connect_bind_v5`, and that thread holds
/// a strong reference to this object for its whole life (passRetained in `start`, released
/// when it ends), so the object outlives every callback.
final class Connection: @unchecked Sendable {
    // @unchecked Sendable: `handle` is used from several threads only through libmosquitto
    // calls made thread-safe by `mosquitto_threaded_set(true)` (publish, subscribe,
    // unsubscribe, disconnect from other threads: they queue packets under libmosquitto's
    // own mutexes) and through the calls that touch the socket (read, write, keep-alive:
    // they may close it on an error), which run only with `io` held; connect runs on the
    // network thread only, while `sending` is false. `pollFDs` is used by the network
    // thread only; `wakeFD` is written from any thread (a pipe: write(2) is atomic for one
    // byte) and read by the network thread. Every other mutable value is in `shared` (a
    // Mutex), `stopping` (Atomic) or the internally locked `queue` and `sleeper`.

    struct Shared {
        var state: ConnectionState = .idle
        var subscriptions: [(filter: String, qos: QoS, noLocal: Bool)] = []
        var pendingFailure: MQTTError?
        var lastLibraryError: String?
        var connects: UInt64 = 0
        var failures: UInt64 = 0
        var consecutiveFailures = 0
        var thread: pthread_t?
        var started = false
        /// The reason code of the broker's DISCONNECT (MQTT 5), for the connection now ending.
        var disconnectReason: Int32?
        /// When the current connection was accepted (monotonic ns).
        var connectedAt: UInt64 = 0
        var takeovers: UInt64 = 0
        var takeoverStreak = 0
        /// MQTT 3.1.1: connections in a row that the broker closed within `shortLivedSeconds`.
        var shortLivedStreak = 0
    }

    /// MQTT 3.1.1 brokers (and mosquitto 2.0 with MQTT 5 too) close a taken-over session's
    /// socket without a reason: this many connections in a row that end within
    /// `shortLivedSeconds` count as a takeover.
    static let shortLivedLimit = 3
    static let shortLivedSeconds = 2.0
    /// A connection that lasted this long ends a takeover streak (the delay starts again at
    /// `takeoverInitial`). Longer than `takeoverMaximum`, so two clients sharing an id stay at
    /// the longest delay rather than starting over.
    static let takeoverStreakReset = 300.0

    let config: MQTTConfiguration
    let logger: Logger
    let queue: InboundQueue
    private let handle: OpaquePointer
    private let connectProperties: OpaquePointer?
    private let shared = Mutex(Shared())
    private let stopping = Atomic<Bool>(false)
    /// Messages handed to libmosquitto (`publish` succeeded) and messages it reported gone
    /// (on_publish: a QoS 0 one written, a QoS ≥ 1 one acknowledged): `waitUntilSent`.
    private let handedOver = Atomic<UInt64>(0)
    private let sentOrAcknowledged = Atomic<UInt64>(0)
    private let sleeper = Sleeper()
    private let isV5: Bool

    /// What `io` guards besides the socket itself.
    struct IO {
        /// The result of a direct write that failed (libmosquitto closed the socket on that
        /// thread), with that thread's errno: the network thread reports it as the reason the
        /// connection ended.
        var writerFailure: (result: Int32, errno: Int32)?
    }
    /// Held around every libmosquitto call that uses the socket or may close it: the network
    /// thread's read, write and keep-alive, and `publish`'s write on the caller's thread. On an
    /// error those calls close the socket then and there; without the lock a publishing
    /// thread's failed write closed it while the network thread was putting it into its
    /// select set (glibc aborts the process: "bit out of range 0 - FD_SETSIZE on fd_set").
    /// The network thread waits for the socket in `poll` without the lock, and runs
    /// libmosquitto's callbacks (an inline handler too) with it held: a publisher therefore
    /// only tries the lock, and leaves the write to the network thread when it is busy —
    /// never waiting on a thread that may be waiting on it.
    private let io = Mutex(IO())
    /// A connection is up and its socket may be written from a publishing thread: set by the
    /// network thread after a connect succeeded, cleared when it finds the connection gone
    /// (and before every connect, which creates the socket), and by a publisher whose write
    /// failed — always with `io` held, so a writer holding `io` sees it settled; read without
    /// the lock by `publish`. A QoS 0 publish while it is false is refused rather than queued.
    /// libmosquitto would queue it as soon as the next connection's socket exists — before that
    /// connection's CONNECT, which the broker answers by closing the
    /// connection as a protocol error (seen with a thread publishing QoS 0 in a loop through
    /// a broker restart: every reconnect was refused until it stopped).
    private let sending = Atomic<Bool>(false)
    /// The read and write ends of a non-blocking pipe that wakes the network thread's `poll`:
    /// a packet queued from another thread and not written there, or `stop()`.
    private let wakeFD: (read: Int32, write: Int32)
    /// The network thread's poll set (the socket, the wake pipe), allocated once.
    private let pollFDs: UnsafeMutablePointer<pollfd>
    /// libmosquitto's debug lines (one per packet sent or received) are copied into a
    /// String only when the logger would print them (trace): on the hot path they would
    /// cost an allocation per packet for nothing.
    fileprivate let traceLibrary: Bool
    /// Publish writes the packet on the caller's thread (see `publish`); off with
    /// `EDGEQ_MQTT_QUEUED_PUBLISH=1`, to compare.
    /// The inline message handler (`start(handler:)`). Written in `start`, before
    /// `pthread_create` starts the network thread, and read only on that thread afterwards
    /// (thread creation orders the write before every read); cleared in `stop` by the one
    /// caller that joined that thread (the join orders every read before the clear).
    nonisolated(unsafe) private var inlineHandler: (@Sendable (MQTTMessage) -> Bool)?
    /// The network thread's id (0 before it runs), stored by that thread itself: `publish`
    /// compares it with the caller's to know whether it runs inside a libmosquitto callback.
    private let networkThread = Atomic<UInt>(0)
    private let directWrite: Bool = {
        guard let v = getenv("EDGEQ_MQTT_QUEUED_PUBLISH") else { return true }
        return String(cString: v) != "1"
    }()

    init(_ config: MQTTConfiguration, logger: Logger) throws {
        _ = mosquittoLibraryInitialised
        var logger = logger
        logger[metadataKey: "mqtt.broker"] = "\(config.broker)"
        if !config.clientID.isEmpty { logger[metadataKey: "mqtt.client_id"] = "\(config.clientID)" }
        self.logger = logger
        traceLibrary = logger.logLevel <= .trace
        self.config = config
        isV5 = config.protocolVersion == .v5

        var clean = true
        if case .persistent = config.session {
            clean = false
            guard !config.clientID.isEmpty else {
                throw MQTTError(.invalidConfiguration, "a persistent session needs a stable client id: set clientID")
            }
        }
        guard config.keepAlive >= 5 else {
            throw MQTTError(.invalidConfiguration, "keep-alive \(config.keepAlive) s is below libmosquitto's minimum of 5 s")
        }
        guard config.inboundCapacity >= 1 else {
            throw MQTTError(.invalidConfiguration, "inbound capacity must be at least 1")
        }
        if let tls = config.tls, (tls.certificateFile == nil) != (tls.keyFile == nil) {
            throw MQTTError(.invalidConfiguration, "a TLS client certificate needs both certificateFile and keyFile")
        }

        guard let h = config.clientID.isEmpty
            ? mosquitto_new(nil, clean, nil)
            : mosquitto_new(config.clientID, clean, nil)
        else {
            throw MQTTError(.library, "mosquitto_new failed: \(String(cString: strerror(errno)))")
        }
        // From here on `handle` is owned: deinit destroys it even when init throws below
        // (all stored properties are set before the first throwing call).
        var props: OpaquePointer? = nil
        if isV5, case .persistent(let expiry) = config.session {
            mosquitto_property_add_int32(&props, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), expiry)
        }
        handle = h
        connectProperties = props
        queue = InboundQueue(capacity: config.inboundCapacity, policy: config.overflow)
        var pipeFDs: [Int32] = [-1, -1]
        let piped = pipe(&pipeFDs) == 0
        let pipeErrno = errno
        wakeFD = (pipeFDs[0], pipeFDs[1])
        pollFDs = .allocate(capacity: 2)
        guard piped else {
            throw MQTTError(.library, "cannot create the MQTT network thread's wake-up pipe: \(String(cString: strerror(pipeErrno)))")
        }
        for fd in [wakeFD.read, wakeFD.write] {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }

        mosquitto_user_data_set(h, Unmanaged.passUnretained(self).toOpaque())
        try check(mosquitto_threaded_set(h, true), "mosquitto_threaded_set")
        try check(mosquitto_int_option(h, MOSQ_OPT_PROTOCOL_VERSION,
                                       isV5 ? Int32(MQTT_PROTOCOL_V5) : Int32(MQTT_PROTOCOL_V311)),
                  "protocol version")
        try check(mosquitto_int_option(h, MOSQ_OPT_TCP_NODELAY, 1), "TCP_NODELAY")
        if let user = config.username {
            try check(mosquitto_username_pw_set(h, user, config.password?.value), "user name and password")
        } else if config.password != nil {
            throw MQTTError(.invalidConfiguration, "a password was given without a user name: set username")
        }
        if config.broker.tls || config.tls != nil {
            try configureTLS(config.tls ?? TLSConfiguration())
        }
        if let will = config.will {
            guard mosquitto_pub_topic_check(will.topic) == MosquittoResult.success.rawValue else {
                throw MQTTError(.invalidTopic, "Last Will topic '\(will.topic)' is invalid (no + or #, not empty)")
            }
            let rc = will.payload.withUnsafeBytes { p in
                mosquitto_will_set(h, will.topic, Int32(p.count), p.baseAddress, will.qos.rawValue, will.retain)
            }
            try check(rc, "Last Will")
        }
        mosquitto_connect_v5_callback_set(h, onConnectC)
        mosquitto_disconnect_v5_callback_set(h, onDisconnectC)
        mosquitto_message_v5_callback_set(h, onMessageC)
        mosquitto_log_callback_set(h, onLogC)
        mosquitto_publish_v5_callback_set(h, onPublishC)
    }

    /// on_publish: one message gone (written at QoS 0, acknowledged at QoS ≥ 1).
    func handlePublished() {
        sentOrAcknowledged.add(1, ordering: .releasing)
    }

    func waitUntilSent(timeout: Double) -> Bool {
        let target = handedOver.load(ordering: .relaxed)
        // Polls every 2 ms (this module keeps Foundation out: the pauses are counted).
        var left = Int((max(timeout, 0) / 0.002).rounded(.up))
        while sentOrAcknowledged.load(ordering: .acquiring) < target {
            if left <= 0 || stopping.load(ordering: .relaxed) { return false }
            left -= 1
            wakeNetworkThread()
            usleep(2_000)
        }
        return true
    }

    deinit {
        mosquitto_destroy(handle)
        var props = connectProperties
        if props != nil { mosquitto_property_free_all(&props) }
        if wakeFD.read >= 0 { close(wakeFD.read) }
        if wakeFD.write >= 0 { close(wakeFD.write) }
        pollFDs.deallocate()
    }

    private func check(_ rc: Int32, _ what: String) throws {
        let r = MosquittoResult(rawValue: rc)
        guard r == .success else {
            throw MQTTError(.library, "\(what): \(r.message)", result: r)
        }
    }

    private func configureTLS(_ tls: TLSConfiguration) throws {
        for (name, path) in [("CA file", tls.caFile), ("client certificate", tls.certificateFile), ("client key", tls.keyFile)] {
            if let path, access(path, R_OK) != 0 {
                throw MQTTError(.invalidConfiguration, "TLS \(name) \(path) cannot be read: \(String(cString: strerror(errno)))")
            }
        }
        let capath: String? = tls.caFile == nil ? "/etc/ssl/certs" : nil
        try check(mosquitto_tls_set(handle, tls.caFile, capath, tls.certificateFile, tls.keyFile, nil), "TLS files")
        if !tls.verifyPeer {
            try check(mosquitto_tls_opts_set(handle, 0 /* SSL_VERIFY_NONE */, nil, nil), "TLS options")
            try check(mosquitto_tls_insecure_set(handle, true), "TLS host name check")
            logger.error("TLS certificate verification is OFF: anyone on the network path can impersonate the broker. Lab use only.")
        }
    }

    // MARK: state

    var state: ConnectionState { shared.withLock { $0.state } }

    var counters: MQTTCounters {
        let q = queue.snapshot()
        return shared.withLock { s in
            MQTTCounters(received: q.received, delivered: q.delivered, dropped: q.dropped, queued: q.queued,
                         queueHighWater: q.highWater, connects: s.connects, failures: s.failures,
                         sessionTakeovers: s.takeovers, takeoverStreak: s.takeoverStreak)
        }
    }

    func waitUntilConnected(timeout: Double) throws {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Double(deadline.tv_sec) + Double(deadline.tv_nsec) / 1e9 + timeout
        while true {
            switch state {
            case .connected: return
            case .stopped: throw MQTTError(.stopped, "the client was stopped")
            case .idle, .connecting, .reconnecting: break
            }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 >= end {
                if case .reconnecting(let f) = state {
                    throw MQTTError(.timeout, "not connected to \(config.broker) within \(timeout) s; last failure: \(f.message)",
                                    result: f.result)
                }
                throw MQTTError(.timeout, "not connected to \(config.broker) within \(timeout) s (state: \(state))")
            }
            usleep(2_000)
        }
    }

    // MARK: subscribe / publish (any thread)

    private func sendSubscribe(_ filter: String, _ qos: QoS, _ noLocal: Bool, _ mosq: OpaquePointer) -> Int32 {
        // MQTT 5: send retained messages only for a subscription new at the broker, so a
        // resumed session does not replay them on every reconnect; no-local when asked.
        var options: Int32 = isV5 ? Int32(MQTT_SUB_OPT_SEND_RETAIN_NEW.rawValue) : 0
        if isV5 && noLocal { options |= Int32(MQTT_SUB_OPT_NO_LOCAL.rawValue) }
        return mosquitto_subscribe_v5(mosq, nil, filter, qos.rawValue, options, nil)
    }

    func subscribe(_ filter: String, qos: QoS, noLocal: Bool) throws {
        guard mosquitto_sub_topic_check(filter) == MosquittoResult.success.rawValue else {
            throw MQTTError(.invalidTopic, "'\(filter)' is not a valid topic filter (+ and # must fill a whole level; # only last)")
        }
        let connected = shared.withLock { s -> Bool in
            if let i = s.subscriptions.firstIndex(where: { $0.filter == filter }) {
                s.subscriptions[i].qos = qos
                s.subscriptions[i].noLocal = noLocal
            } else {
                s.subscriptions.append((filter, qos, noLocal))
            }
            return s.state == .connected
        }
        if connected {
            let r = MosquittoResult(rawValue: sendSubscribe(filter, qos, noLocal, handle))
            wakeNetworkThread()
            // NO_CONN: the connection just dropped; the next connect subscribes.
            if r != .success && r != .noConnection {
                throw MQTTError(.library, "subscribe \(filter): \(r.message)", result: r)
            }
        }
    }

    func unsubscribe(_ filter: String) throws {
        guard mosquitto_sub_topic_check(filter) == MosquittoResult.success.rawValue else {
            throw MQTTError(.invalidTopic, "'\(filter)' is not a valid topic filter")
        }
        let connected = shared.withLock { s -> Bool in
            s.subscriptions.removeAll { $0.filter == filter }
            return s.state == .connected
        }
        if connected {
            _ = mosquitto_unsubscribe(handle, nil, filter)
            wakeNetworkThread()
        }
    }

    func publish(_ topic: String, _ payload: [UInt8], qos: QoS, retain: Bool) throws -> PublishOutcome {
        if stopping.load(ordering: .relaxed) { throw MQTTError(.stopped, "publish after stop()") }
        if qos == .atMostOnce && !sending.load(ordering: .acquiring) {
            throw MQTTError(.connectionLost, "not connected to \(config.broker): the QoS 0 message on \(topic) was not sent",
                            result: .noConnection)
        }
        // withCString: the implicit String → char* conversion copies the topic to a new
        // array on every call; this borrows the string's own UTF-8 storage.
        let rc = topic.withCString { t in
            payload.withUnsafeBytes { p in
                mosquitto_publish_v5(handle, nil, t, Int32(p.count), p.baseAddress, qos.rawValue, retain, nil)
            }
        }
        let r = MosquittoResult(rawValue: rc)
        switch r {
        case .success:
            handedOver.add(1, ordering: .relaxed)
            // In threaded mode libmosquitto only queues the packet and wakes the network
            // thread (a byte on its socket pair), which then sends it: one more thread
            // wake-up between the decision and the wire. Send it from here instead; the
            // network thread wakes anyway and finds nothing left. `packet__write` holds the
            // library's out-packet mutexes, so the two threads never interleave a packet. On
            // a write error libmosquitto closes the socket, and the network thread's next
            // `mosquitto_loop` reports the loss and reconnects as for any other loss.
            //
            // Not on the network thread itself (an inline handler, inside libmosquitto's message
            // callback): libmosquitto holds its callback mutex there, and writing a PUBLISH takes
            // it again (for on_publish), which would deadlock. The network thread sends what its
            // handler published as soon as the callback returns (`flushFromNetworkThread`).
            if UInt(pthread_self()) != networkThread.load(ordering: .relaxed) {
                if !directWrite || !writeFromThisThread() { wakeNetworkThread() }
            }
            return .accepted
        case .noConnection:
            if qos != .atMostOnce {
                handedOver.add(1, ordering: .relaxed)   // kept by libmosquitto, sent after the reconnect
                return .queuedUntilReconnect
            }
            throw MQTTError(.connectionLost, "not connected to \(config.broker): the QoS 0 message on \(topic) was not sent", result: r)
        case .invalid, .malformedUTF8:
            throw MQTTError(.invalidTopic, "cannot publish on '\(topic)': \(r.message) (no + or #, valid UTF-8, not empty)", result: r)
        default:
            throw MQTTError(.library, "publish on \(topic): \(r.message)", result: r)
        }
    }

    /// Writes what is queued, on the caller's thread, when the network thread is not using
    /// the socket and a connection is up; false when it did not (the network thread must).
    /// A write that fails closes the socket here (libmosquitto does): the failure is kept for
    /// the network thread, which then finds the connection gone.
    private func writeFromThisThread() -> Bool {
        let done = io.withLockIfAvailable { io -> Bool in
            guard sending.load(ordering: .relaxed), mosquitto_socket(handle) >= 0 else { return false }
            let rc = mosquitto_loop_write(handle, 1)
            if rc != MosquittoResult.success.rawValue {
                sending.store(false, ordering: .releasing)
                io.writerFailure = (rc, errno)
            }
            return true
        }
        return done ?? false
    }

    /// Makes the network thread's `poll` return now (one byte on the wake pipe; when the pipe
    /// is full a wake-up is pending anyway).
    private func wakeNetworkThread() {
        var one: UInt8 = 1
        _ = write(wakeFD.write, &one, 1)
    }

    // MARK: callbacks (network thread)

    fileprivate func handleConnack(_ rc: Int32, flags: Int32) {
        if rc == 0 {
            // The subscriptions are queued before the client says it is connected: whoever waits
            // for `connected` and then announces itself (a retained "online") must not be answered
            // by a message the broker drops because the SUBSCRIBE was not sent yet. libmosquitto
            // sends packets in the order they are queued, and the broker handles them in order.
            let subs = shared.withLock { $0.subscriptions }
            for sub in subs { _ = sendSubscribe(sub.filter, sub.qos, sub.noLocal, handle) }
            // A `subscribe` or `unsubscribe` in between saw a client not yet connected and only
            // changed the list: what changed is sent here, after the state changed, so neither
            // is lost.
            let (added, removed, count) = shared.withLock { s -> ([(filter: String, qos: QoS, noLocal: Bool)], [String], Int) in
                s.state = .connected
                s.connects += 1
                s.consecutiveFailures = 0
                s.pendingFailure = nil
                s.disconnectReason = nil
                s.connectedAt = MonotonicClock.nanoseconds()
                let added = s.subscriptions.filter { n in !subs.contains { $0.filter == n.filter && $0.qos == n.qos && $0.noLocal == n.noLocal } }
                let removed = subs.filter { o in !s.subscriptions.contains { $0.filter == o.filter } }.map(\.filter)
                return (added, removed, s.subscriptions.count)
            }
            for sub in added { _ = sendSubscribe(sub.filter, sub.qos, sub.noLocal, handle) }
            for filter in removed { _ = mosquitto_unsubscribe(handle, nil, filter) }
            // Connected: stop libmosquitto's log callback (unless traced). With a callback set,
            // libmosquitto mallocs and formats a debug line for every packet sent or received
            // (about 3 % of the gateway's CPU at full rate); its errors while connected come
            // back as return codes. `runLoop` sets it again before each connection attempt, so
            // connect and TLS handshake errors keep their library detail.
            if !traceLibrary { mosquitto_log_callback_set(handle, nil) }
            logger.info("MQTT connected", metadata: [
                "mqtt.session_present": "\(flags & 1 == 1)", "mqtt.subscriptions": "\(count)",
            ])
        } else {
            let failure = classifyConnack(rc)
            shared.withLock { $0.pendingFailure = failure }
        }
    }

    private func classifyConnack(_ rc: Int32) -> MQTTError {
        let text = String(cString: isV5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc))
        let authCodes: Set<Int32> = isV5
            ? [Int32(MQTT_RC_BAD_USERNAME_OR_PASSWORD.rawValue), Int32(MQTT_RC_NOT_AUTHORIZED.rawValue)]
            : [4, 5]
        if authCodes.contains(rc) {
            return MQTTError(.notAuthorized,
                             "the broker \(config.broker) refused the credentials of user '\(config.username ?? "")': \(text) (check the user name and the password source)")
        }
        return MQTTError(.refused, "the broker \(config.broker) refused the connection: \(text) (CONNACK code \(rc))")
    }

    fileprivate func handleMessage(_ message: MQTTMessage) {
        if let inlineHandler, inlineHandler(message) {
            queue.recordInline()
            return
        }
        queue.put(message)
    }

    /// The broker's DISCONNECT (MQTT 5: its reason code) or the end of the connection.
    fileprivate func handleDisconnect(_ rc: Int32) {
        if isV5 && rc == Self.sessionTakenOverReason {
            shared.withLock { $0.disconnectReason = rc }
        }
    }

    /// MQTT 5 reason code 0x8E, "Session taken over".
    static let sessionTakenOverReason: Int32 = 0x8E

    /// A connection attempt failed: the broker is down or refusing us, which a takeover never
    /// causes (the other client's broker accepts us at once). Short connections before it
    /// (a broker killed and restarted) and a running streak no longer count.
    private func clearTakeoverEvidence() {
        shared.withLock { s in
            s.shortLivedStreak = 0
            s.takeoverStreak = 0
        }
    }

    /// Decides, when a connection accepted earlier has ended, whether another client took the
    /// session over; counts it and returns the takeovers in a row (nil: an ordinary loss).
    private func noteConnectionEnded() -> Int? {
        let now = MonotonicClock.nanoseconds()
        return shared.withLock { s -> Int? in
            let lasted = Double(now &- s.connectedAt) / 1e9
            let reason = s.disconnectReason
            s.disconnectReason = nil
            s.shortLivedStreak = lasted < Self.shortLivedSeconds ? s.shortLivedStreak + 1 : 0
            if lasted >= Self.takeoverStreakReset { s.takeoverStreak = 0 }
            // The broker's reason when it gives one (MQTT 5; mosquitto 2.0 closes the socket
            // without it); else connections dropped right after they were accepted; once a
            // streak runs, every loss before the connection held `takeoverStreakReset`.
            let takenOver = reason == Self.sessionTakenOverReason
                || s.shortLivedStreak >= Self.shortLivedLimit
                || s.takeoverStreak > 0
            guard takenOver else { return nil }
            s.shortLivedStreak = 0
            s.takeovers += 1
            s.takeoverStreak += 1
            s.failures += 1
            return s.takeoverStreak
        }
    }

    fileprivate func handleLog(level: Int32, _ text: String) {
        if level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING) != 0 {
            shared.withLock { $0.lastLibraryError = text }
        }
        logger.trace("libmosquitto: \(text)")
    }

    // MARK: the network thread

    func start(handler: (@Sendable (MQTTMessage) -> Bool)?) {
        let go = shared.withLock { s -> Bool in
            guard !s.started else { return false }
            s.started = true
            s.state = .connecting
            return true
        }
        guard go else { return }
        // Only the one caller that flipped `started` gets here, before the thread exists.
        inlineHandler = handler
        let arg = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let c = Unmanaged<Connection>.fromOpaque(arg).takeRetainedValue()
            c.runLoop()
            return nil
        }, arg)
        if rc != 0 {
            Unmanaged<Connection>.fromOpaque(arg).release()
            let failure = MQTTError(.library, "cannot start the MQTT network thread: \(String(cString: strerror(rc)))")
            shared.withLock { $0.state = .reconnecting(lastFailure: failure) }
            logger.error("\(failure.message)")
            return
        }
        shared.withLock { $0.thread = tid }
    }

    func stop() {
        let thread = shared.withLock { s -> pthread_t? in
            let t = s.thread
            s.thread = nil
            if !s.started { s.state = .stopped; s.started = true }
            return t
        }
        stopping.store(true, ordering: .sequentiallyConsistent)
        sleeper.wake()
        // Thread-safe in threaded mode: queues DISCONNECT; the network thread writes it.
        _ = mosquitto_disconnect(handle)
        wakeNetworkThread()
        if let thread {
            pthread_join(thread, nil)
            // The network thread is gone: nothing reads the handler any more. Dropping it
            // breaks the cycle client → handler → its owner (e.g. a gateway) → client.
            inlineHandler = nil
        }
        shared.withLock { $0.state = .stopped }
        queue.close()
    }

    private func connectOnce() -> MosquittoResult {
        let b = config.broker
        let rc: Int32
        if isV5 {
            rc = mosquitto_connect_bind_v5(handle, b.host, Int32(b.port), config.keepAlive, nil, connectProperties)
        } else {
            rc = mosquitto_connect_bind(handle, b.host, Int32(b.port), config.keepAlive, nil)
        }
        return MosquittoResult(rawValue: rc)
    }

    private func classify(_ r: MosquittoResult, connecting: Bool) -> MQTTError {
        let (pending, libError) = shared.withLock { s -> (MQTTError?, String?) in
            let p = s.pendingFailure
            let l = s.lastLibraryError
            s.pendingFailure = nil
            s.lastLibraryError = nil
            return (p, l)
        }
        if let pending { return pending }
        let b = config.broker
        switch r {
        case .tls:
            return MQTTError(.tls, "TLS with \(b) failed: \(libError ?? r.message). Check that the CA file holds the CA that signed the broker's certificate, that the certificate names '\(b.host)', and the client certificate if the broker asks for one",
                             result: r)
        case .errno:
            let code = errno
            let e = String(cString: strerror(code))
            if connecting, !b.tls, code == ECONNRESET || code == EPIPE {
                return MQTTError(.connectFailed, "\(Self.closedBeforeConnack(b)) (\(e))", result: r)
            }
            if connecting {
                return MQTTError(.connectFailed, "cannot connect to \(b): \(e) (is the broker running and listening on that port?)", result: r)
            }
            return MQTTError(.connectionLost, "connection to \(b) lost: \(e)", result: r)
        default:
            if connecting {
                if !b.tls, r == .connectionLost || r == .noConnection {
                    return MQTTError(.connectFailed, Self.closedBeforeConnack(b), result: r)
                }
                if b.tls, r == .connectionLost || r == .noConnection {
                    return MQTTError(.tls, "the broker \(b) closed the TLS connection before accepting us: it may require a client certificate (certificateFile, keyFile) signed by a CA it trusts; see the broker's log",
                                     result: r)
                }
                if r.rawValue == Int32(MOSQ_ERR_EAI.rawValue) {
                    return MQTTError(.connectFailed, "cannot resolve host '\(b.host)' of \(b)", result: r)
                }
                return MQTTError(.connectFailed, "cannot connect to \(b): \(r.message)", result: r)
            }
            return MQTTError(.connectionLost, "connection to \(b) lost: \(libError ?? r.message)", result: r)
        }
    }

    /// A plain connection closed by the broker before its CONNACK: most often a TLS listener
    /// that read our CONNECT as a broken TLS handshake.
    static func closedBeforeConnack(_ b: BrokerURL) -> String {
        "the broker \(b) closed the connection before CONNACK: is it a TLS listener? Then use mqtts:// (with the same host and port) and its CA file; otherwise see the broker's log (it may refuse this client for another reason)"
    }

    /// Reports a session takeover and returns the delay before reconnecting (growing with
    /// the takeovers in a row).
    private func recordTakeover(streak: Int) -> Double {
        let delay = config.reconnect.delay(afterTakeovers: streak)
        let id = config.clientID
        let how = "took the session over (the broker closed our connection \(streak == 1 ? "right after accepting it, \(Self.shortLivedLimit) times in a row, or with reason 0x8E" : "again"))"
        let failure = MQTTError(.sessionTakenOver,
                                "another client with the client id '\(id)' connected to \(config.broker) and \(how), \(streak) time(s) in a row: two clients (gateways) share this id and knock each other off. Give each its own client id (gateway.client_id)")
        let total = shared.withLock { s -> UInt64 in
            if !stopping.load(ordering: .relaxed) { s.state = .reconnecting(lastFailure: failure) }
            return s.takeovers
        }
        logger.error("MQTT \(failure.code): \(failure.message); reconnecting in \(delay) s", metadata: [
            "mqtt.session_takeovers": "\(total)", "mqtt.takeover_streak": "\(streak)",
        ])
        return delay
    }

    private func recordFailure(_ failure: MQTTError) -> Double {
        let (n, total) = shared.withLock { s -> (Int, UInt64) in
            s.failures += 1
            s.consecutiveFailures += 1
            if !stopping.load(ordering: .relaxed) { s.state = .reconnecting(lastFailure: failure) }
            return (s.consecutiveFailures, s.failures)
        }
        let delay = config.reconnect.delay(afterFailures: n)
        // The first failure of a run and then every 20th at warning; the others at debug.
        let level: Logger.Level = (n == 1 || n % 20 == 0) ? .warning : .debug
        logger.log(level: level, "MQTT \(failure.code): \(failure.message); retrying in \(delay) s", metadata: [
            "mqtt.failures": "\(total)", "mqtt.consecutive_failures": "\(n)",
        ])
        return delay
    }

    /// libmosquitto reads one packet per `mosquitto_loop_read` call: keep reading while the
    /// socket holds bytes, so a burst is handed off before the next poll (as echo_c does).
    /// With `io` held. Returns the failure of a read or write (libmosquitto closed the socket).
    private func drain() -> MosquittoResult {
        var rc = flushFromNetworkThread()
        let sock = mosquitto_socket(handle)
        guard rc == .success, sock >= 0 else { return rc }
        var avail: Int32 = 0
        for _ in 0..<4096 {
            guard ioctl(sock, UInt(FIONREAD), &avail) == 0, avail > 0 else { return .success }
            rc = MosquittoResult(rawValue: mosquitto_loop_read(handle, 1))
            if rc == .success { rc = flushFromNetworkThread() }
            if rc != .success { return rc }
        }
        return .success
    }

    /// Sends at once what an inline handler published during the last read (queued inside
    /// the callback, see `publish`), rather than after one more turn.
    private func flushFromNetworkThread() -> MosquittoResult {
        guard inlineHandler != nil && mosquitto_want_write(handle) else { return .success }
        return MosquittoResult(rawValue: mosquitto_loop_write(handle, 1))
    }

    private func runLoop() {
        networkThread.store(UInt(pthread_self()), ordering: .relaxed)
        config.networkThreadSetup?()
        while !stopping.load(ordering: .relaxed) {
            mosquitto_log_callback_set(handle, onLogC)  // see handleConnack
            io.withLock { _ in sending.store(false, ordering: .releasing) }
            let rc = connectOnce()
            if rc != .success {
                clearTakeoverEvidence()
                let delay = recordFailure(classify(rc, connecting: true))
                _ = sleeper.sleep(seconds: delay)
                continue
            }
            var loopResult = MosquittoResult.success
            io.withLock { io in
                sending.store(true, ordering: .releasing)
                io.writerFailure = nil
            }
            while !stopping.load(ordering: .relaxed) {
                if let ended = turn(timeoutMilliseconds: 100) { loopResult = ended; break }
            }
            if stopping.load(ordering: .relaxed) { break }
            let wasConnected = shared.withLock { s -> Bool in
                if s.state == .connected { s.state = .reconnecting(lastFailure: MQTTError(.connectionLost, "connection lost")) ; return true }
                return false
            }
            if wasConnected, let streak = noteConnectionEnded() {
                _ = classify(loopResult, connecting: false)   // clears the pending library error
                _ = sleeper.sleep(seconds: recordTakeover(streak: streak))
                continue
            }
            if !wasConnected { clearTakeoverEvidence() }
            let delay = recordFailure(classify(loopResult, connecting: !wasConnected))
            _ = sleeper.sleep(seconds: delay)
        }
        // Flush the DISCONNECT queued by stop(): a few turns until the socket closes.
        _ = mosquitto_disconnect(handle)
        for _ in 0..<50 {
            if turn(timeoutMilliseconds: 10) != nil { break }
        }
        io.withLock { _ in sending.store(false, ordering: .releasing) }
        logger.info("MQTT stopped")
    }

    /// One turn of a connection, on the network thread: waits up to `timeoutMilliseconds` for
    /// the socket or a wake-up (without `io`), then reads, writes what is queued and keeps the
    /// connection alive (with `io`). Returns why the connection ended, or nil while it lasts.
    /// What `mosquitto_loop` does, but with `poll` (no FD_SETSIZE limit) and the socket read
    /// under the same lock as the publishers' writes.
    private func turn(timeoutMilliseconds: Int32) -> MosquittoResult? {
        let sock = io.withLock { _ in mosquitto_socket(handle) }
        if sock < 0 { return ended() }
        pollFDs[0] = pollfd(fd: sock, events: Int16(POLLIN) | (mosquitto_want_write(handle) ? Int16(POLLOUT) : 0), revents: 0)
        pollFDs[1] = pollfd(fd: wakeFD.read, events: Int16(POLLIN), revents: 0)
        let ready = poll(pollFDs, 2, timeoutMilliseconds)
        if ready < 0 && errno != EINTR { return .errno }
        if ready > 0 && pollFDs[1].revents != 0 {
            // Every wake-up byte at once (many pile up while no connection is up).
            withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 8) { buffer in
                while read(wakeFD.read, buffer.baseAddress, buffer.count) == buffer.count {}
            }
        }
        let readable = ready > 0 && pollFDs[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0
        return io.withLock { io -> MosquittoResult? in
            // A publishing thread's failed write closed the socket while this one waited.
            guard mosquitto_socket(handle) == sock else { return endedLocked(&io) }
            if readable {
                var rc = MosquittoResult(rawValue: mosquitto_loop_read(handle, 1))
                if rc == .success { rc = drain() }
                if rc != .success { sending.store(false, ordering: .releasing); return rc }
                if mosquitto_socket(handle) < 0 { return endedLocked(&io) }
            }
            if mosquitto_want_write(handle) {
                let rc = MosquittoResult(rawValue: mosquitto_loop_write(handle, 1))
                if rc != .success { sending.store(false, ordering: .releasing); return rc }
            }
            let rc = MosquittoResult(rawValue: mosquitto_loop_misc(handle))
            if rc != .success { sending.store(false, ordering: .releasing); return rc }
            return nil
        }
    }

    /// The connection's socket is gone: why (a publisher's failed write, else no connection).
    private func ended() -> MosquittoResult { io.withLock { endedLocked(&$0) } }

    private func endedLocked(_ io: inout IO) -> MosquittoResult {
        sending.store(false, ordering: .releasing)
        defer { io.writerFailure = nil }
        guard let failure = io.writerFailure else { return .noConnection }
        errno = failure.errno   // `classify` explains MOSQ_ERR_ERRNO with it
        return MosquittoResult(rawValue: failure.result)
    }
}

/// An interruptible sleep for the backoff (so `stop()` does not wait for it).
private final class Sleeper: @unchecked Sendable {
    // @unchecked Sendable: `woken` is read and written only with `mutex` held.
    private let sync = MonotonicCondition()
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { sync.mutex }
    private var cond: UnsafeMutablePointer<pthread_cond_t> { sync.cond }
    private var woken = false

    /// Sleeps `seconds` or until `wake()`; returns true when woken.
    func sleep(seconds: Double) -> Bool {
        var deadline = MonotonicCondition.deadline(after: seconds)
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !woken {
            if pthread_cond_timedwait(cond, mutex, &deadline) == ETIMEDOUT { break }
        }
        return woken
    }

    func wake() {
        pthread_mutex_lock(mutex)
        woken = true
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(cond)
    }
}

// MARK: - C callbacks: free functions, so no actor isolation applies (TOOLCHAIN-NOTES: SIGILL).

private func connection(_ userdata: UnsafeMutableRawPointer?) -> Connection? {
    guard let userdata else { return nil }
    return Unmanaged<Connection>.fromOpaque(userdata).takeUnretainedValue()
}

private let onConnectC: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, Int32, OpaquePointer?) -> Void = {
    _, userdata, rc, flags, _ in
    connection(userdata)?.handleConnack(rc, flags: flags)
}

private let onDisconnectC: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, OpaquePointer?) -> Void = {
    _, userdata, rc, _ in
    // Loss is detected by the network thread (from a read, write or keep-alive result, or a
    // socket a publishing thread's failed write closed); only the reason (session taken over)
    // is noted here. Runs on the network thread, or on a publishing thread whose write failed.
    connection(userdata)?.handleDisconnect(rc)
}

private let onMessageC: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, UnsafePointer<mosquitto_message>?, OpaquePointer?) -> Void = {
    _, userdata, message, _ in
    guard let c = connection(userdata), let m = message?.pointee, let topicPointer = m.topic else { return }
    // libmosquitto frees topic and payload when this callback returns: copy both now.
    let topic = String(cString: topicPointer)
    let payload: [UInt8]
    if let p = m.payload, m.payloadlen > 0 {
        payload = Array(UnsafeRawBufferPointer(start: p, count: Int(m.payloadlen)))
    } else {
        payload = []
    }
    c.handleMessage(MQTTMessage(topic: topic, payload: payload, qos: QoS(rawValue: m.qos) ?? .atMostOnce, retain: m.retain))
}

private let onPublishC: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, Int32, OpaquePointer?) -> Void = {
    _, userdata, _, _, _ in
    connection(userdata)?.handlePublished()
}

private let onLogC: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?) -> Void = {
    _, userdata, level, text in
    guard let c = connection(userdata), let text else { return }
    // Per-packet debug lines: dropped before any copy unless traced (see `traceLibrary`).
    guard c.traceLibrary || level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING) != 0 else { return }
    c.handleLog(level: level, String(cString: text))
}
