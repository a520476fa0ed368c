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
/// mapping: /etc/edgeq/ahu.yaml            # training: the fleet's mapping (state, actions, learning)
/// key: /etc/edgeq/keys/fleet-ahu.key      # training: the key models are signed with (name: the stem)
/// train_every: 5000                       # training: after this many new transitions (default 5000; or 1000/gateway)
/// train_rows: 100000                      # training: reads at most this many rows, each gateway's newest (default 100000; or all)
/// updates: 20000                          # training: gradient updates (default: the mapping's)
/// max_message: 256kB                      # publishing: the largest message sent (default 256 KiB)
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
    /// The fleet's mapping file (the gateways' state, actions and `learning` section): with it
    /// the learner trains on the fleet log; without it, it only stores and acknowledges.
    public var mapping: String?
    /// The private key file (`NAME.key`, `edgeq keys generate`) the learner signs its models
    /// with; its name is the file's stem. Required with `mapping`.
    public var key: String?
    /// Train after this many new transitions in the fleet log (default 5000; the command line's
    /// `--train-every` wins).
    public var trainEvery = 5000
    /// `train_every: N/gateway`: train after `trainEvery` new transitions for each gateway that
    /// shipped rows since the last training began, with the training's updates multiplied by
    /// that number of gateways too (docs/fleet.md, "Training and publishing").
    public var trainEveryPerGateway = false
    /// The most rows a training reads (nil: the whole fleet log): each gateway's newest, shared
    /// evenly among the gateways (default 100,000; `train_rows: all` for the whole log; the
    /// command line's `--train-rows` wins). Bounds a training's cost as the fleet log grows.
    public var trainRows: Int? = 100_000
    /// What `train_every` (and `--train-every`) accepts, in words for error messages.
    public static let trainEveryForm = "a whole number of new transitions in 1...100000000, or N/gateway"

    /// Reads a `train_every` value: a whole number of new transitions (1 … 100,000,000), or
    /// `N/gateway` for N new transitions per gateway that shipped since the last training.
    /// Nil when the text is neither.
    public static func parseTrainEvery(_ text: String) -> (rows: Int, perGateway: Bool)? {
        var t = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "")
        var perGateway = false
        if t.hasSuffix("/gateway") {
            perGateway = true
            t = String(t.dropLast("/gateway".count)).trimmingCharacters(in: .whitespaces)
        }
        guard let n = Int(t), (1...100_000_000).contains(n) else { return nil }
        return (n, perGateway)
    }

    /// The smallest `train_rows` accepted (file and command line).
    public static let minTrainRows = 1000
    /// Gradient updates per training (nil: the mapping's `learning.updates_per_retrain`).
    public var updates: Int?
    /// The largest message the learner publishes, in bytes: a model bigger than it goes out in
    /// chunks (default 256 KiB; EMQX allows 1 MB by default, mosquitto 256 MB).
    public var maxMessage = 256 * 1024

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
    /// `<fleet>/model`: the manifest of the newest model (retained).
    public var modelTopic: String { "\(fleet)/model" }
    /// `<fleet>/model/chunk/<index>`: a chunk of the newest model (retained).
    public func modelChunkTopic(_ index: Int) -> String { "\(fleet)/model/chunk/\(index)" }
    /// `<fleet>/verdict/+`: the gateways' verdicts on the models.
    public var verdictFilter: String { "\(fleet)/verdict/+" }

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
        guard let f = r.mapping(root, "the fleet learner file", known: ["fleet", "group", "id", "broker", "data", "status_interval", "metrics_port", "username", "password", "tls",
                                                                                  "mapping", "key", "train_every", "train_rows", "updates", "max_message"],
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
        let mapping = f["mapping"].flatMap { r.string($0, "mapping") }
        let key = f["key"].flatMap { r.string($0, "key") }
        if mapping != nil, key == nil, let n = f["mapping"] {
            r.error(n, "training needs a key to sign its models: add 'key: PATH/NAME.key' (make one with `edgeq keys generate NAME`)")
        }
        if key != nil, mapping == nil, let n = f["key"] {
            r.error(n, "a key without 'mapping': the learner trains (and signs) only with the fleet's mapping file; add 'mapping: FILE'")
        }
        var trainEvery: (rows: Int, perGateway: Bool)?
        if let n = f["train_every"] {
            if case .scalar(let s) = n, s.style == .plain, let v = parseTrainEvery(s.string) {
                trainEvery = v
            } else {
                r.error(n, "train_every must be \(trainEveryForm) (N new transitions for each gateway that shipped since the last training), found \(r.describe(n))")
            }
        }
        var trainRows: Int?? = nil
        if let n = f["train_rows"] {
            if n.scalar?.string == "all" {
                trainRows = .some(nil)
            } else if let v = r.int(n, "train_rows (rows a training reads, or 'all')", min: minTrainRows, max: 1_000_000_000) {
                trainRows = .some(v)
            }
        }
        let updates = f["updates"].flatMap { r.int($0, "updates", min: 1, max: 10_000_000) }
        let maxMessage = f["max_message"].flatMap { readSize($0, r) }
        guard let fleet, let group, let id else { return nil }
        var c = FleetLearnerConfig(fleet: fleet, group: group, id: id)
        c.broker = broker
        c.data = data
        if let interval { c.statusInterval = interval }
        c.metricsPort = port.map { UInt16($0) }
        c.username = username
        c.password = password
        c.tls = tls
        c.mapping = mapping
        c.key = key
        if let trainEvery {
            c.trainEvery = trainEvery.rows
            c.trainEveryPerGateway = trainEvery.perGateway
        }
        if let trainRows { c.trainRows = trainRows }
        c.updates = updates
        if let maxMessage { c.maxMessage = maxMessage }
        return c
    }

    /// A size: a whole number of bytes, or with `kB`/`KiB`/`MB`/`MiB` (1,000 or 1,024); 1 KiB to 256 MiB.
    static func readSize(_ n: Node, _ r: NodeReader) -> Int? {
        guard let text = r.string(n, "max_message") else { return nil }
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("kB", 1000), ("KB", 1000), ("MB", 1_000_000), ("B", 1), ("", 1)]
        for (u, f) in units where t.hasSuffix(u) {
            guard let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v.isFinite else { continue }
            let bytes = v * Double(f)
            guard bytes >= 1024, bytes <= Double(256 << 20) else {
                r.error(n, "max_message must be between 1KiB and 256MiB, found '\(text)'")
                return nil
            }
            return Int(bytes)
        }
        r.error(n, "max_message '\(text)' is not a size: write bytes (262144) or with a unit (256kB, 256KiB, 1MB)")
        return nil
    }
}
