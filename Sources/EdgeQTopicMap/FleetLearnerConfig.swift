// The fleet learner's own configuration file (FLEET.yaml, docs/fleet.md "The learner").
import Foundation
import Yams

/// What `edgeq learner --config FLEET.yaml` reads: the fleet, the shared-subscription group and
/// the learner's id, plus optional broker, data directory and status settings.
///
/// ```yaml
/// fleet: fleet/ahu          # the gateways' `fleet.topic`
/// group: ahu-learners       # learners in one group share the batches ($share/<group>/…)
/// id: learner-1             # this learner (status topic, the `learner` column)
/// broker: mqtt://127.0.0.1:1883
/// data: /var/lib/edgeq-learner
/// status_interval: 5s
/// metrics_port: 9465
/// username: {env: LEARNER_USER}          # like the mapping's gateway section
/// password: {file: /run/secrets/learner}
/// tls: {ca: /etc/ssl/ca.pem}
/// ```
public struct FleetLearnerConfig: Sendable, Equatable {
    /// The fleet topic prefix (the gateways' `fleet.topic`).
    public var fleet: String
    /// The shared-subscription group.
    public var group: String
    /// This learner's id.
    public var id: String
    /// The broker URL (the command line's `--broker` wins); default mqtt://127.0.0.1:1883.
    public var broker: String?
    /// The data directory holding `fleet.sqlite` (the command line's `--data` wins).
    public var data: String?
    /// Seconds between two retained status messages on `<fleet>/learner/<id>/status` (default 5 s).
    public var statusInterval: Double = 5
    /// The Prometheus endpoint's port (nil: none; the command line's `--metrics-port` wins).
    public var metricsPort: UInt16?
    /// The broker user name, by reference (as in the mapping's `gateway` section).
    public var username: SecretReference?
    /// The broker password, by reference.
    public var password: SecretReference?
    /// TLS files for an `mqtts://` broker.
    public var tls: TLSConfig?

    /// A configuration with the defaults.
    public init(fleet: String, group: String, id: String) {
        self.fleet = fleet
        self.group = group
        self.id = id
    }

    /// `$share/<group>/<fleet>/experience/+`.
    public var subscription: String { "$share/\(group)/\(fleet)/experience/+" }
    /// `<fleet>/ack/<gateway>`.
    public func ackTopic(gateway: String) -> String { "\(fleet)/ack/\(gateway)" }
    /// `<fleet>/learner/<id>/status`.
    public var statusTopic: String { "\(fleet)/learner/\(id)/status" }

    /// Loads and validates the file at `path`.
    /// - Throws: `MappingError` (`.unreadable`, or `.invalid` with `FILE:LINE:COL: message` lines).
    public static func load(path: String) throws(MappingError) -> FleetLearnerConfig {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw MappingError(code: .unreadable, diagnostics: [
                MappingDiagnostic(file: path, line: 1, column: 1, message: "cannot read the file (does it exist, is it UTF-8 text, may we read it?)"),
            ])
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses and validates FLEET.yaml text; `file` is used in the diagnostics.
    /// - Throws: `MappingError` (`.invalid`) listing every problem found.
    public static func parse(yaml: String, file: String = "<fleet>") throws(MappingError) -> FleetLearnerConfig {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let e as YamlError {
            throw MappingError(code: .invalid, diagnostics: [TopicMap.yamlDiagnostic(e, file: file)])
        } catch {
            throw MappingError(code: .invalid, diagnostics: [MappingDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(error)")])
        }
        guard let root else {
            throw MappingError(code: .invalid, diagnostics: [MappingDiagnostic(file: file, line: 1, column: 1, message: "the file is empty; it needs at least fleet, group and id")])
        }
        let r = NodeReader(file: file)
        let c = read(root, r)
        let diags = r.diagnostics.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
        guard diags.isEmpty, let c else { throw MappingError(code: .invalid, diagnostics: diags) }
        return c
    }

    static func read(_ root: Node, _ r: NodeReader) -> FleetLearnerConfig? {
        guard let f = r.mapping(root, "the fleet learner file", known: ["fleet", "group", "id", "broker", "data", "status_interval", "metrics_port", "username", "password", "tls"],
                                required: ["fleet", "group", "id"]) else { return nil }
        func word(_ key: String, _ what: String) -> String? {
            guard let n = f[key], let s = r.string(n, what) else { return nil }
            if s.isEmpty || !s.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }) {
                r.error(n, "\(what) '\(s)' may contain only letters, digits, '-' and '_' (it is one topic level)")
                return nil
            }
            return s
        }
        var fleet: String?
        if let n = f["fleet"], let s = r.string(n, "fleet") {
            if let p = topicProblem(s, allowWildcards: false) {
                r.error(n, "invalid fleet topic '\(s)': \(p)")
            } else if s.hasSuffix("/") {
                r.error(n, "fleet topic '\(s)' must not end with '/': write the prefix alone (e.g. fleet/ahu)")
            } else {
                fleet = s
            }
        }
        let group = word("group", "group")
        let id = word("id", "learner id")
        var broker: String?
        if let n = f["broker"], let s = r.string(n, "broker") {
            if !(s.hasPrefix("mqtt://") || s.hasPrefix("mqtts://")) || URLComponents(string: s)?.host?.isEmpty != false {
                r.error(n, "broker URL '\(s)' must look like mqtt://host:1883 or mqtts://host:8883")
            } else {
                broker = s
            }
        }
        let data = f["data"].flatMap { r.string($0, "data") }
        let interval = f["status_interval"].flatMap { r.duration($0, "status_interval") }
        let port = f["metrics_port"].flatMap { r.int($0, "metrics_port", min: 0, max: 65535) }
        // Credentials and TLS read exactly as the mapping's gateway section reads them.
        let b = Builder(r: r)
        let username = f["username"].flatMap { b.secret($0, "username") }
        let password = f["password"].flatMap { b.secret($0, "password") }
        var tls: TLSConfig?
        if let n = f["tls"], let t = r.mapping(n, "tls", known: ["ca", "cert", "key"]) {
            var c = TLSConfig()
            if let v = t["ca"] { c.caFile = r.string(v, "tls ca") }
            if let v = t["cert"] { c.certFile = r.string(v, "tls cert") }
            if let v = t["key"] { c.keyFile = r.string(v, "tls key") }
            if (c.certFile == nil) != (c.keyFile == nil) { r.error(n, "tls: give both 'cert' and 'key' for a client certificate, or neither") }
            tls = c
        }
        guard let fleet, let group, let id else { return nil }
        var c = FleetLearnerConfig(fleet: fleet, group: group, id: id)
        c.broker = broker
        c.data = data
        if let interval { c.statusInterval = interval }
        c.metricsPort = port.map { UInt16($0) }
        c.username = username
        c.password = password
        c.tls = tls
        return c
    }
}
