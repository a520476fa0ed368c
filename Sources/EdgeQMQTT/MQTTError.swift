import CMosquitto

/// A libmosquitto result code (`MOSQ_ERR_*`) with the library's own message
/// (`mosquitto_strerror`), so callers can match on the code and show the text.
public struct MosquittoResult: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `MOSQ_ERR_*` value.
    public let rawValue: Int32

    /// Wraps a `MOSQ_ERR_*` value.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// `MOSQ_ERR_SUCCESS`.
    public static let success = MosquittoResult(rawValue: Int32(MOSQ_ERR_SUCCESS.rawValue))
    /// `MOSQ_ERR_NO_CONN`: not connected (a QoS > 0 publish is still queued and sent on reconnect).
    public static let noConnection = MosquittoResult(rawValue: Int32(MOSQ_ERR_NO_CONN.rawValue))
    /// `MOSQ_ERR_INVAL`: an invalid argument (topic, QoS, payload size).
    public static let invalid = MosquittoResult(rawValue: Int32(MOSQ_ERR_INVAL.rawValue))
    /// `MOSQ_ERR_NOMEM`.
    public static let noMemory = MosquittoResult(rawValue: Int32(MOSQ_ERR_NOMEM.rawValue))
    /// `MOSQ_ERR_TLS`: the TLS handshake or TLS setup failed.
    public static let tls = MosquittoResult(rawValue: Int32(MOSQ_ERR_TLS.rawValue))
    /// `MOSQ_ERR_ERRNO`: a system call failed (see errno; e.g. connection refused).
    public static let errno = MosquittoResult(rawValue: Int32(MOSQ_ERR_ERRNO.rawValue))
    /// `MOSQ_ERR_CONN_LOST`.
    public static let connectionLost = MosquittoResult(rawValue: Int32(MOSQ_ERR_CONN_LOST.rawValue))
    /// `MOSQ_ERR_PAYLOAD_SIZE`.
    public static let payloadSize = MosquittoResult(rawValue: Int32(MOSQ_ERR_PAYLOAD_SIZE.rawValue))
    /// `MOSQ_ERR_MALFORMED_UTF8`: the topic is not valid UTF-8.
    public static let malformedUTF8 = MosquittoResult(rawValue: Int32(MOSQ_ERR_MALFORMED_UTF8.rawValue))

    /// `mosquitto_strerror` for this code.
    public var message: String { String(cString: mosquitto_strerror(rawValue)) }

    /// The message with the code.
    public var description: String { "\(message) (MOSQ_ERR \(rawValue))" }
}

/// An error of the MQTT client: what went wrong and what to do about it.
///
/// A struct over a code, so new codes break nobody; match on `code`.
public struct MQTTError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The code's name.
        public var description: String { name }

        /// The broker URL cannot be used (scheme, host, port, or credentials in it).
        public static let invalidURL = Code("invalidURL")
        /// The configuration is inconsistent (e.g. a persistent session without a client id).
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// A secret (password) could not be read from its environment variable or file.
        public static let secretUnavailable = Code("secretUnavailable")
        /// libmosquitto refused a call (see `result`).
        public static let library = Code("library")
        /// The TCP connection could not be opened (broker down, wrong port, DNS).
        public static let connectFailed = Code("connectFailed")
        /// TLS failed: certificate not trusted, wrong host name, bad client certificate.
        public static let tls = Code("tls")
        /// The broker refused the credentials (bad user name or password, not authorised).
        public static let notAuthorized = Code("notAuthorized")
        /// The broker refused the connection for another reason (CONNACK code in the message).
        public static let refused = Code("refused")
        /// An established connection was lost.
        public static let connectionLost = Code("connectionLost")
        /// Another client connected with the same client id and the broker handed it our
        /// session (MQTT 5 DISCONNECT reason 0x8E when the broker sends one; otherwise 3
        /// connections in a row dropped within 2 s of being accepted). Two clients sharing one
        /// id knock each other off: give each its own id.
        public static let sessionTakenOver = Code("sessionTakenOver")
        /// Not connected within the time asked for.
        public static let timeout = Code("timeout")
        /// The client was stopped.
        public static let stopped = Code("stopped")
        /// A topic or topic filter is invalid.
        public static let invalidTopic = Code("invalidTopic")
    }

    /// The kind of failure.
    public let code: Code
    /// What happened and what to do, for people. Never contains a password.
    public let message: String
    /// The libmosquitto result behind it, when there is one.
    public let result: MosquittoResult?

    /// Makes an error.
    public init(_ code: Code, _ message: String, result: MosquittoResult? = nil) {
        self.code = code
        self.message = message
        self.result = result
    }

    /// `MQTT <code>: <message>`.
    public var description: String { "MQTT \(code): \(message)" }
}
