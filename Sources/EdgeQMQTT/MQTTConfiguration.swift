#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// MQTT quality of service.
public enum QoS: Int32, Sendable, Hashable, CaseIterable {
    /// At most once.
    case atMostOnce = 0
    /// At least once (PUBACK).
    case atLeastOnce = 1
    /// Exactly once (PUBREC/PUBREL/PUBCOMP).
    case exactlyOnce = 2
}

/// The MQTT protocol version spoken to the broker.
public enum MQTTProtocolVersion: Sendable, Hashable {
    /// MQTT 5 (default).
    case v5
    /// MQTT 3.1.1, for brokers without MQTT 5.
    case v311
}

/// A broker address parsed from `mqtt://HOST[:PORT]` (TCP, default port 1883) or
/// `mqtts://HOST[:PORT]` (TLS, default port 8883).
///
/// Credentials are never taken from the URL: URLs end up in logs and process listings.
public struct BrokerURL: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address (IPv6 without brackets).
    public var host: String
    /// TCP port.
    public var port: Int
    /// True for `mqtts://`.
    public var tls: Bool

    /// Makes a broker address from its parts.
    public init(host: String, port: Int, tls: Bool) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    /// Parses `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (an optional trailing `/`).
    ///
    /// - Throws: `MQTTError` `.invalidURL` when the scheme is not mqtt/mqtts, the host is
    ///   empty, the port is not 1...65535, there is a path, or the URL carries credentials
    ///   (`user:password@`): pass the user in the configuration and the password as `env:` or `file:`.
    public init(parsing text: String) throws {
        let scheme: Substring
        var rest: Substring
        if let r = BrokerURL.separator(in: text) {
            scheme = text[..<r]
            rest = text[text.index(r, offsetBy: 3)...]
        } else {
            throw MQTTError(.invalidURL, "'\(BrokerURL.redacted(text))' is not a broker URL: write mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        }
        switch scheme.lowercased() {
        case "mqtt", "tcp": tls = false
        case "mqtts", "ssl", "tls": tls = true
        default:
            throw MQTTError(.invalidURL, "unknown scheme '\(scheme)' in broker URL: use mqtt:// (TCP) or mqtts:// (TLS)")
        }
        if rest.contains("@") {
            throw MQTTError(.invalidURL, "the broker URL must not carry credentials (user:password@): give the user name in the configuration and the password as env:NAME or file:/path")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if rest.contains("/") || rest.contains("?") {
            throw MQTTError(.invalidURL, "the broker URL '\(text)' has a path or query: write \(scheme)://HOST[:PORT]")
        }
        let defaultPort = tls ? 8883 : 1883
        if rest.hasPrefix("[") {
            // [IPv6]:port
            guard let close = rest.firstIndex(of: "]") else {
                throw MQTTError(.invalidURL, "unclosed '[' in broker URL '\(text)'")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.isEmpty {
                port = defaultPort
            } else if after.hasPrefix(":"), let p = Int(after.dropFirst()) {
                port = p
            } else {
                throw MQTTError(.invalidURL, "bad port in broker URL '\(text)'")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]) else {
                throw MQTTError(.invalidURL, "bad port in broker URL '\(text)': write \(scheme)://HOST:PORT with PORT a number")
            }
            port = p
        } else {
            host = String(rest)
            port = defaultPort
        }
        guard !host.isEmpty else { throw MQTTError(.invalidURL, "no host in broker URL '\(text)'") }
        guard (1...65535).contains(port) else {
            throw MQTTError(.invalidURL, "port \(port) in broker URL '\(text)' is not in 1...65535")
        }
    }

    /// `mqtt://HOST:PORT` or `mqtts://HOST:PORT`.
    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(tls ? "mqtts" : "mqtt")://\(h):\(port)"
    }

    /// Where "://" starts in `text`.
    static func separator(in text: String) -> String.Index? {
        var i = text.startIndex
        while i < text.endIndex {
            if text[i...].hasPrefix("://") { return i }
            i = text.index(after: i)
        }
        return nil
    }

    /// A URL with anything before an `@` replaced, for error messages.
    static func redacted(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@") else { return text }
        return "<redacted>" + text[at...]
    }
}

/// A secret (a password) that never appears in logs, descriptions or dumps.
///
/// Read it from an environment variable or a file so that it is not on a command line:
/// `Secret(source: "env:EDGEQ_MQTT_PASSWORD")` or `Secret(source: "file:/etc/edgeq/mqtt.pw")`.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself. Do not log it.
    public let value: String

    /// Wraps a secret already in memory (tests, a vault client).
    public init(_ value: String) { self.value = value }

    /// Reads a secret from `env:NAME` (an environment variable) or `file:/path` (a file's
    /// contents without the trailing newline).
    ///
    /// - Throws: `MQTTError` `.secretUnavailable` when the source is neither form, the
    ///   variable is unset or empty, or the file cannot be read or is empty. The message
    ///   names the variable or file, never the secret.
    public init(source: String) throws {
        if source.hasPrefix("env:") {
            let name = String(source.dropFirst(4))
            guard let raw = getenv(name) else {
                throw MQTTError(.secretUnavailable, "environment variable \(name) is not set (it should hold the MQTT password)")
            }
            let v = String(cString: raw)
            guard !v.isEmpty else { throw MQTTError(.secretUnavailable, "environment variable \(name) is empty") }
            value = v
        } else if source.hasPrefix("file:") {
            let path = String(source.dropFirst(5))
            guard let f = fopen(path, "r") else {
                throw MQTTError(.secretUnavailable, "cannot read the password file \(path): \(String(cString: strerror(errno)))")
            }
            defer { fclose(f) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = fread(&buffer, 1, buffer.count, f)
                if n <= 0 { break }
                bytes += buffer[0..<n]
                if bytes.count > 65536 { break }
            }
            while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
            guard !bytes.isEmpty else { throw MQTTError(.secretUnavailable, "the password file \(path) is empty") }
            value = String(decoding: bytes, as: UTF8.self)
        } else {
            throw MQTTError(.secretUnavailable, "a password source must be env:NAME or file:/path (a literal password is not accepted here)")
        }
    }

    /// Always `<secret>`.
    public var description: String { "<secret>" }
    /// Always `<secret>`.
    public var debugDescription: String { "<secret>" }
    /// No children: dumps and reflection do not show the value.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// TLS settings for `mqtts://` brokers.
public struct TLSConfiguration: Sendable, Hashable {
    /// PEM file of the CA(s) that sign the broker's certificate; nil uses the system's CAs.
    public var caFile: String?
    /// PEM client certificate, when the broker asks for one (with `keyFile`).
    public var certificateFile: String?
    /// PEM private key of the client certificate.
    public var keyFile: String?
    /// Verify the broker's certificate chain and host name (default true). Turning it
    /// off is for a lab only: it is logged as an error at every start.
    public var verifyPeer: Bool

    /// Makes TLS settings; verification is on unless `verifyPeer` is false.
    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifyPeer: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
    }
}

/// The Last Will: published by the broker when this client vanishes without a DISCONNECT
/// (crash, kill -9, network loss past 1.5 × keep-alive). A clean `stop()` does not send it.
public struct LastWill: Sendable, Hashable {
    /// The topic.
    public var topic: String
    /// The payload.
    public var payload: [UInt8]
    /// Its QoS.
    public var qos: QoS
    /// Whether the broker keeps it as the retained message of `topic`.
    public var retain: Bool

    /// Makes a Last Will.
    public init(topic: String, payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = true) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// Session lifetime at the broker.
public enum SessionMode: Sendable, Hashable {
    /// A new session on every connect: nothing is queued for us while we are away.
    case clean
    /// Keep the session (subscriptions and queued QoS ≥ 1 messages) at the broker for
    /// `expiry` seconds after a disconnect (MQTT 5: clean start off + Session Expiry
    /// Interval; MQTT 3.1.1: clean session off, the broker decides how long). Needs a
    /// stable client id.
    case persistent(expiry: UInt32)
}

/// Bounded exponential backoff between reconnect attempts: `initial`, doubled after each
/// failure, capped at `maximum`; back to `initial` after a successful CONNACK.
public struct ReconnectBackoff: Sendable, Hashable {
    /// First delay, seconds.
    public var initial: Double
    /// Largest delay, seconds.
    public var maximum: Double

    /// First delay after the session was taken over by another client with the same id, seconds.
    public var takeoverInitial: Double
    /// Largest delay after session takeovers, seconds.
    public var takeoverMaximum: Double

    /// Makes a backoff; defaults 0.1 s doubling to 1.5 s (a broker back up is reached
    /// within 1.5 s plus the connect time), and 1 s doubling to 60 s after session takeovers
    /// (two clients with one id then take turns about once a minute, not several times a second).
    public init(initial: Double = 0.1, maximum: Double = 1.5, takeoverInitial: Double = 1, takeoverMaximum: Double = 60) {
        self.initial = max(0.001, initial)
        self.maximum = max(self.initial, maximum)
        self.takeoverInitial = max(0.001, takeoverInitial)
        self.takeoverMaximum = max(self.takeoverInitial, takeoverMaximum)
    }

    /// The delay before reconnecting after `takeovers` session takeovers in a row (1 = the first).
    public func delay(afterTakeovers takeovers: Int) -> Double {
        guard takeovers > 0 else { return 0 }
        let exponent = min(takeovers - 1, 30)
        return min(takeoverMaximum, takeoverInitial * Double(1 << exponent))
    }

    /// The delay before attempt `failures` (1 = after the first failure).
    public func delay(afterFailures failures: Int) -> Double {
        guard failures > 0 else { return 0 }
        let exponent = min(failures - 1, 30)
        return min(maximum, initial * Double(1 << exponent))
    }
}

/// What to drop when the inbound hand-off is full.
public enum OverflowPolicy: Sendable, Hashable {
    /// Drop the oldest queued message to make room (default: a controller wants the
    /// freshest readings).
    case dropOldest
    /// Drop the arriving message.
    case dropNewest
}

/// Everything the MQTT client needs to connect.
public struct MQTTConfiguration: Sendable {
    /// The broker.
    public var broker: BrokerURL
    /// The client id; must be stable for a persistent session. Empty: a random id
    /// (clean session only).
    public var clientID: String
    /// MQTT 5 (default) or 3.1.1.
    public var protocolVersion: MQTTProtocolVersion
    /// Keep-alive in seconds (the broker declares us gone after 1.5 ×).
    public var keepAlive: Int32
    /// User name, when the broker wants one.
    public var username: String?
    /// Password; see `Secret(source:)`.
    public var password: Secret?
    /// TLS settings; required by `mqtts://` (defaults apply when nil: system CAs, verification on).
    public var tls: TLSConfiguration?
    /// The Last Will, if any.
    public var will: LastWill?
    /// Session lifetime.
    public var session: SessionMode
    /// Reconnect backoff.
    public var reconnect: ReconnectBackoff
    /// Capacity of the inbound hand-off (messages).
    public var inboundCapacity: Int
    /// What to drop when it is full.
    public var overflow: OverflowPolicy
    /// Called once on the client's network thread when it starts, before it connects: a
    /// connection that serves background work (the fleet shipper's) lowers that thread's
    /// scheduling priority or names it here. Must not block; nil: nothing.
    public var networkThreadSetup: (@Sendable () -> Void)? = nil

    /// Makes a configuration with the defaults: MQTT 5, keep-alive 30 s, clean session,
    /// backoff 0.1 s → 1.5 s, inbound capacity 1,024, drop oldest.
    public init(
        broker: BrokerURL,
        clientID: String = "",
        protocolVersion: MQTTProtocolVersion = .v5,
        keepAlive: Int32 = 30,
        username: String? = nil,
        password: Secret? = nil,
        tls: TLSConfiguration? = nil,
        will: LastWill? = nil,
        session: SessionMode = .clean,
        reconnect: ReconnectBackoff = ReconnectBackoff(),
        inboundCapacity: Int = 1024,
        overflow: OverflowPolicy = .dropOldest
    ) {
        self.broker = broker
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.keepAlive = keepAlive
        self.username = username
        self.password = password
        self.tls = tls
        self.will = will
        self.session = session
        self.reconnect = reconnect
        self.inboundCapacity = inboundCapacity
        self.overflow = overflow
    }

    /// Parses `url` and makes a configuration (see the memberwise initialiser for the rest).
    ///
    /// - Throws: `MQTTError` `.invalidURL` (see `BrokerURL(parsing:)`).
    public init(url: String, clientID: String = "") throws {
        self.init(broker: try BrokerURL(parsing: url), clientID: clientID)
    }
}
